//! The layer-by-layer path of the CPU trainer ([`super::CpuTrainer`]):
//! any [`Arch`] (the notes' CNN, VGG, AlexNet, and the LeNets when their
//! fused kernels are not chosen), driven by its [`lenet_core::model::Plan`].
//!
//! Legend: `N` images of a thread's chunk, `C` channels, `H` rows, `W`
//! columns, `K` kernel side, `S` stride, `P` padding, `F` features.
//!
//! Layout: every feature map of a chunk is channel-major, `(C, N, H, W)`,
//! and a vector of `F` features is `(F, N)`. The input `(N, 1, 28, 28)` is
//! already `(1, N, 28, 28)`, pooling, resizing and activations work on
//! `C * N` planes, and a convolution is one matrix product per group of
//! images whose output lands in place:
//! `y(C_OUT, G * OH * OW) = w(C_OUT, C_IN * K * K) . col(C_IN * K * K, G * OH * OW)`
//! with `col` the im2col of the group's images. Backward reuses the same
//! `col` (recomputed) for `dw += dy . col^T` and scatters `w^T . dy` back
//! with col2im. Linear layers are one product over the whole chunk.
//!
//! A convolution followed by max pooling (the notes' CNN) runs the two
//! together, block by block through a buffer sized for the level-2 cache:
//! the convolution's output is never stored, since the pooling's backward
//! needs only its argmax. Products go through [`super::sgemm`].
//!
//! Each thread runs its chunk (`train_chunk`, `forward_chunk`) through
//! single-threaded products into its own gradient; the trainer sums the
//! gradients in thread order. Backward stops at the first layer with
//! parameters: no input gradient is computed for it or below it.
//!
//! This file also holds the memory estimate of a CPU run ([`cpu_memory`]).

use lenet_core::activation::Activation;
use lenet_core::dropout;
use lenet_core::loss::{cross_entropy, cross_entropy_backward};
use lenet_core::model::{Arch, CLASSES, Layer, Plan as NetPlan, Shape3};
use lenet_core::resize;

use super::sgemm::{View, sgemm};
use crate::backend::{OptimizerConfig, TrainerError, try_zeros};

const IMG: usize = 28 * 28;

/// Inference runs at most this many images per thread at a time, so that
/// its buffers stay small for any batch.
const INFER_BLOCK: usize = 64;

/// Columns of a convolution's im2col block: `G` images with
/// `G * OH * OW * C_IN * K * K` close to this many floats (at least one
/// image), small enough to stay in the level-2 cache.
const COL_FLOATS: usize = 1 << 18;

/// One layer, resolved against its input shape and parameter offsets.
#[derive(Clone, Copy, Debug)]
enum Op {
    Conv {
        k: usize,
        pad: usize,
        stride: usize,
        /// Offset of `w (C_OUT, C_IN, K, K)`; the bias `(C_OUT)` follows.
        w: usize,
    },
    Linear {
        /// Offset of `w (F_OUT, F_IN)`; the bias `(F_OUT)` follows.
        w: usize,
    },
    MaxPool {
        k: usize,
        stride: usize,
    },
    AvgPool {
        k: usize,
        stride: usize,
    },
    Act,
    Dropout {
        p: f32,
    },
    Flatten,
    Upsample,
}

/// A layer of the plan.
#[derive(Clone, Copy, Debug)]
struct Step {
    op: Op,
    /// Index in `Arch::layers` (the dropout mask's layer number).
    index: u32,
    input: Shape3,
    output: Shape3,
    /// Buffer of the output: 0 is the network input, `b > 0` is
    /// `Work::bufs[b - 1]`.
    buf: usize,
    /// The step overwrites its input (an activation after a layer whose
    /// backward pass does not read its own output).
    in_place: bool,
    /// Images per im2col block (convolutions).
    group: usize,
    /// A convolution followed by max pooling `(K, S)`: the two run
    /// together and the convolution's output is not kept.
    pool: Option<(usize, usize)>,
}

/// The schedule of a network.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    steps: Vec<Step>,
    /// Per-image length of each buffer (`Work::bufs`).
    buf_lens: Vec<usize>,
    /// Index of the first step with parameters: backward stops there.
    first_param: usize,
    /// Per-image length of the largest feature map (gradient buffers).
    max_len: usize,
    /// Largest im2col block, in floats.
    max_col: usize,
    /// Largest output block of a convolution fused with pooling.
    max_tmp: usize,
    pub(super) num_params: usize,
}

impl Plan {
    /// Resolves `arch` for this back end.
    ///
    /// # Errors
    /// The network does not fit its input, or has a layer this back end
    /// cannot run.
    pub(super) fn new(arch: Arch) -> Result<Plan, TrainerError> {
        let net = NetPlan::new(arch).map_err(|e| TrainerError::State(format!("{arch}: {e}")))?;
        let mut steps = Vec::new();
        let mut buf_lens = Vec::new();
        let (mut max_len, mut max_col) = (net.input().len(), 0);
        let mut buf = 0;
        for pl in net.layers() {
            let (l, s, out) = (&pl.layer, pl.input, pl.output);
            let w = pl.params.as_ref().map_or(0, |p| p.weight.start);
            let mut group = 0;
            let op = match *l {
                Layer::Conv2d {
                    kernel,
                    padding,
                    stride,
                    ..
                } => {
                    let rows = s.c * kernel * kernel;
                    let ohw = out.h * out.w;
                    group = (COL_FLOATS / ((rows + out.c) * ohw)).max(1);
                    max_col = max_col.max(rows * ohw * group);
                    Op::Conv {
                        k: kernel,
                        pad: padding,
                        stride,
                        w,
                    }
                }
                Layer::Linear { .. } => Op::Linear { w },
                Layer::MaxPool2d { kernel, stride } => Op::MaxPool { k: kernel, stride },
                Layer::AvgPool2d { kernel, stride } => Op::AvgPool { k: kernel, stride },
                Layer::Act => Op::Act,
                Layer::Dropout { p } => Op::Dropout { p },
                Layer::Flatten => Op::Flatten,
                Layer::Upsample { .. } => Op::Upsample,
                _ => {
                    return Err(TrainerError::State(format!(
                        "{arch}: layer {l:?} is not supported by the CPU trainer"
                    )));
                }
            };
            // An activation overwrites its input unless that is the network
            // input or another activation's output (whose backward reads it).
            let in_place = matches!(op, Op::Act)
                && steps
                    .last()
                    .is_some_and(|p: &Step| !matches!(p.op, Op::Act));
            if !in_place {
                buf_lens.push(out.len());
                buf = buf_lens.len();
            }
            max_len = max_len.max(out.len());
            steps.push(Step {
                op,
                index: pl.index as u32,
                input: s,
                output: out,
                buf,
                in_place,
                group,
                pool: None,
            });
        }
        let mut max_tmp = 0;
        for j in 1..steps.len() {
            if let (Op::Conv { .. }, Op::MaxPool { k, stride }) = (steps[j - 1].op, steps[j].op) {
                let c = &mut steps[j - 1];
                c.pool = Some((k, stride));
                buf_lens[c.buf - 1] = 0;
                max_tmp = max_tmp.max(c.output.len() * c.group);
            }
        }
        Ok(Plan {
            max_tmp,
            steps,
            buf_lens,
            first_param: net.first_param_layer().unwrap_or(0),
            max_len,
            max_col,
            num_params: net.num_params(),
        })
    }
}

/// One thread's buffers, sized for `cap` images and reused across steps.
#[derive(Debug, Default)]
pub(super) struct Work {
    cap: usize,
    /// Layer outputs, `(C, N, H, W)` each (see [`Step::buf`]).
    bufs: Vec<Vec<f32>>,
    /// Per max-pool step: index of the chosen input in its plane, per
    /// output `(C, N, OH, OW)`.
    argmax: Vec<Vec<u32>>,
    /// im2col block `(C_IN * K * K, G * OH * OW)`.
    col: Vec<f32>,
    /// Output block of a convolution followed by max pooling,
    /// `(C_OUT, G * OH * OW)`.
    tmp: Vec<f32>,
    /// Gradient ping-pong buffers, `max_len * N` each.
    da: Vec<f32>,
    db: Vec<f32>,
}

impl Work {
    /// Sizes the buffers for `n` images; a failed allocation is an error
    /// (the sizes grow with the batch) and leaves the buffers empty.
    fn ensure(&mut self, plan: &Plan, n: usize) -> Result<(), TrainerError> {
        if n <= self.cap && !self.bufs.is_empty() {
            return Ok(());
        }
        let n = n.max(self.cap);
        *self = Work::default();
        let mut bufs = Vec::with_capacity(plan.buf_lens.len());
        for &l in &plan.buf_lens {
            bufs.push(try_zeros(l * n, "a layer's outputs")?);
        }
        let mut argmax = Vec::new();
        for s in plan
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::MaxPool { .. }))
        {
            let len = s.output.len() * n;
            let mut v: Vec<u32> = Vec::new();
            v.try_reserve_exact(len).map_err(|_| TrainerError::Device {
                device: "cpu",
                msg: format!("cannot allocate the max-pool indices ({len} values)"),
            })?;
            v.resize(len, 0);
            argmax.push(v);
        }
        *self = Work {
            cap: n,
            bufs,
            argmax,
            col: try_zeros(plan.max_col, "the im2col block")?,
            tmp: try_zeros(plan.max_tmp, "the pooling block")?,
            da: try_zeros(plan.max_len * n, "the gradient buffers")?,
            db: try_zeros(plan.max_len * n, "the gradient buffers")?,
        };
        Ok(())
    }
}

/// The memory a CPU run needs, in bytes, by what holds it: what
/// [`super::CpuTrainer`] allocates on this path (its fused LeNet path
/// needs less) allocates for a network, a thread count and a
/// batch, plus the training loop's data and checkpoint copies.
/// [`cpu_memory`] computes it; `host train`, `eval` and `bench` refuse a
/// run whose [`total`](Self::total) exceeds the memory available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryNeed {
    /// Parameters.
    pub params: u64,
    /// Per-thread gradients (`threads x params`).
    pub grads: u64,
    /// Optimizer state (Adam's two moments, SGD's momentum).
    pub optimizer: u64,
    /// Per-thread layer outputs, max-pool indices and gradient buffers
    /// for the thread's share of the batch.
    pub activations: u64,
    /// Per-thread im2col and pooling blocks.
    pub workspace: u64,
    /// The largest transient: the summed gradient of the update, or the
    /// copies a checkpoint is encoded from (parameters twice, optimizer
    /// state, and the file's bytes twice).
    pub transient: u64,
    /// The data set as loaded and as the run's splits, and one batch.
    pub data: u64,
    /// The program itself (code, thread stacks touched, allocator slack).
    pub process: u64,
}

impl MemoryNeed {
    /// Everything, in bytes.
    pub fn total(&self) -> u64 {
        [
            self.params,
            self.grads,
            self.optimizer,
            self.activations,
            self.workspace,
            self.transient,
            self.data,
            self.process,
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// What a run of [`cpu_memory`] does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunKind {
    /// Training with this optimizer (and evaluation after each epoch).
    Train(OptimizerConfig),
    /// Inference only (`eval`, `predict`).
    Infer,
}

/// Resident size of the program before it allocates for a network.
pub const PROCESS_BYTES: u64 = 24 << 20;

/// The memory a CPU run of `arch` needs on `threads` threads (0: all
/// cores) with mini-batches of `batch` images, over a data set of
/// `data_images` images: the sizes the layer-by-layer path allocates (see
/// [`Work::ensure`]), the training loop's copies, and [`PROCESS_BYTES`].
///
/// # Errors
/// [`TrainerError::State`] if the network does not fit its input.
pub fn cpu_memory(
    arch: Arch,
    kind: RunKind,
    threads: usize,
    batch: usize,
    data_images: usize,
) -> Result<MemoryNeed, TrainerError> {
    let plan = Plan::new(arch)?;
    let f = 4u64; // bytes per f32 (and per u32 argmax index)
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    } as u64;
    let p = plan.num_params as u64;
    let batch = batch.max(1) as u64;
    // Images a thread holds at once: its share of a training batch, or an
    // inference block of the 1000-image evaluation batches.
    let eval = INFER_BLOCK.min(1000usize.div_ceil(threads as usize)) as u64;
    let (used, share, m) = match kind {
        RunKind::Train(opt) => {
            let used = threads.min(batch);
            let m = match opt {
                OptimizerConfig::Adam { .. } => 2 * p,
                OptimizerConfig::Sgd { momentum, .. } if momentum != 0.0 => p,
                OptimizerConfig::Sgd { .. } => 0,
            };
            (used, batch.div_ceil(used).max(eval), m)
        }
        RunKind::Infer => (
            threads.min(batch.div_ceil(INFER_BLOCK as u64)).max(1),
            eval,
            0,
        ),
    };
    let per_image: u64 = plan.buf_lens.iter().map(|&l| l as u64).sum::<u64>()
        + plan
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::MaxPool { .. }))
            .map(|s| s.output.len() as u64)
            .sum::<u64>()
        + 2 * plan.max_len as u64;
    let train = matches!(kind, RunKind::Train(_));
    let pixels = IMG as u64;
    Ok(MemoryNeed {
        params: f * p,
        grads: if train { f * used * p } else { 0 },
        optimizer: f * m,
        activations: f * used * share * per_image,
        workspace: f * used * (plan.max_col + plan.max_tmp) as u64,
        transient: if train {
            f * p.max(4 * p + 3 * m)
        } else {
            // The model file's bytes and its parsed parameters.
            f * p
        },
        // Images and labels as loaded, the run's copies of them (and the
        // 10,000 images of the training accuracy), and the float batches.
        data: (data_images as u64).saturating_mul(2 * (pixels + 1))
            + 10_000 * (pixels + 1)
            + f * pixels * (batch.max(1000) + 1000),
        process: PROCESS_BYTES,
    })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes: what the kernel says can be
/// allocated without swapping; `None` where it cannot be read.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// What a forward pass needs besides the data.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    plan: &'a Plan,
    params: &'a [f32],
    act: Activation,
    /// Dropout masks: `Some((seed, step, first image's position in the
    /// batch))` in training, `None` (identity) in inference.
    dropout: Option<(u64, u64, usize)>,
}

/// `col[(ci * K + u) * K + v][(g * OH + oy) * OW + ox] = x[ci][g0 + g][oy * S + u - P][ox * S + v - P]`
/// (0 outside the image) for the `g1 - g0` images from `g0`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    col: &mut [f32], // (C_IN * K * K, G * OH * OW)
    x: &[f32],       // (C_IN, N, H, W)
    n: usize,
    input: Shape3,
    output: Shape3,
    (k, pad, stride): (usize, usize, usize),
    g0: usize,
    g1: usize,
) {
    let (h, w, oh, ow) = (input.h, input.w, output.h, output.w);
    let cols = (g1 - g0) * oh * ow;
    for ci in 0..input.c {
        for u in 0..k {
            for v in 0..k {
                let row = &mut col[((ci * k + u) * k + v) * cols..][..cols];
                for g in 0..g1 - g0 {
                    let plane = &x[(ci * n + g0 + g) * h * w..][..h * w];
                    for oy in 0..oh {
                        let out = &mut row[(g * oh + oy) * ow..][..ow];
                        let iy = (oy * stride + u) as isize - pad as isize;
                        if iy < 0 || iy >= h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..][..w];
                        if stride == 1 {
                            // ix = ox + v - pad: a shifted copy with zero ends.
                            let lo = pad.saturating_sub(v).min(ow);
                            let hi = (w + pad).saturating_sub(v).clamp(lo, ow);
                            out[..lo].fill(0.0);
                            out[hi..].fill(0.0);
                            out[lo..hi].copy_from_slice(&src[lo + v - pad..hi + v - pad]);
                        } else {
                            for (ox, o) in out.iter_mut().enumerate() {
                                let ix = (ox * stride + v) as isize - pad as isize;
                                *o = if ix < 0 || ix >= w as isize {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[ci][g0 + g][iy][ix] += dcol[...]` for
/// every column entry that read that pixel.
#[allow(clippy::too_many_arguments)]
fn col2im(
    dx: &mut [f32], // (C_IN, N, H, W)
    dcol: &[f32],   // (C_IN * K * K, G * OH * OW)
    n: usize,
    input: Shape3,
    output: Shape3,
    (k, pad, stride): (usize, usize, usize),
    g0: usize,
    g1: usize,
) {
    let (h, w, oh, ow) = (input.h, input.w, output.h, output.w);
    let cols = (g1 - g0) * oh * ow;
    for ci in 0..input.c {
        for u in 0..k {
            for v in 0..k {
                let row = &dcol[((ci * k + u) * k + v) * cols..][..cols];
                for g in 0..g1 - g0 {
                    let plane = &mut dx[(ci * n + g0 + g) * h * w..][..h * w];
                    for oy in 0..oh {
                        let d = &row[(g * oh + oy) * ow..][..ow];
                        let iy = (oy * stride + u) as isize - pad as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let dst = &mut plane[iy as usize * w..][..w];
                        for (ox, &dv) in d.iter().enumerate() {
                            let ix = (ox * stride + v) as isize - pad as isize;
                            if ix >= 0 && ix < w as isize {
                                dst[ix as usize] += dv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `v` replaces the running maximum `best` of a window scanned in
/// row-major order: strictly greater, or NaN over a number (PyTorch keeps
/// the first maximum and lets NaN win). Branch-free: the winner's position
/// is unpredictable.
#[inline(always)]
fn takes(v: f32, best: f32) -> bool {
    ((v > best) | v.is_nan()) & !best.is_nan()
}

/// Max pooling of one plane `x (H, W)` with a `K x K` window:
/// `y[oy][ox] = max_{u,v} x[oy*S+u][ox*S+v]`, and `am` the index in the
/// plane of the first maximum.
fn max_pool<const K: usize>(
    y: &mut [f32],  // (OH, OW)
    am: &mut [u32], // (OH, OW)
    x: &[f32],      // (H, W)
    si: Shape3,
    so: Shape3,
    stride: usize,
) {
    let (y, am, x) = (
        &mut y[..so.h * so.w],
        &mut am[..so.h * so.w],
        &x[..si.h * si.w],
    );
    for oy in 0..so.h {
        let rows: [&[f32]; K] = core::array::from_fn(|u| &x[(oy * stride + u) * si.w..][..si.w]);
        let (yr, ar) = (&mut y[oy * so.w..][..so.w], &mut am[oy * so.w..][..so.w]);
        for ox in 0..so.w {
            let x0 = ox * stride;
            let mut best = rows[0][x0];
            let mut at = (oy * stride) * si.w + x0;
            for (u, row) in rows.iter().enumerate() {
                for v in 0..K {
                    let val = row[x0 + v];
                    let t = takes(val, best);
                    best = if t { val } else { best };
                    let j = (oy * stride + u) * si.w + x0 + v;
                    at = if t { j } else { at };
                }
            }
            yr[ox] = best;
            ar[ox] = at as u32;
        }
    }
}

/// [`max_pool`] for the common 2x2 window at stride 2, written as
/// straight-line selects over row pairs so that it vectorizes.
fn max_pool_2x2(y: &mut [f32], am: &mut [u32], x: &[f32], si: Shape3, so: Shape3) {
    for oy in 0..so.h {
        let r0 = &x[2 * oy * si.w..][..2 * so.w];
        let r1 = &x[(2 * oy + 1) * si.w..][..2 * so.w];
        let yr = &mut y[oy * so.w..][..so.w];
        let ar = &mut am[oy * so.w..][..so.w];
        let base = (2 * oy * si.w) as u32;
        let below = si.w as u32;
        for (ox, (((yv, av), p0), p1)) in yr
            .iter_mut()
            .zip(ar.iter_mut())
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
            .enumerate()
        {
            let at0 = base + 2 * ox as u32;
            let (mut best, mut at) = (p0[0], at0);
            for (v, j) in [
                (p0[1], at0 + 1),
                (p1[0], at0 + below),
                (p1[1], at0 + below + 1),
            ] {
                let t = takes(v, best);
                best = if t { v } else { best };
                at = if t { j } else { at };
            }
            *yv = best;
            *av = at;
        }
    }
}

/// [`max_pool`] for any window side `k`.
fn max_pool_any(
    y: &mut [f32],
    am: &mut [u32],
    x: &[f32],
    si: Shape3,
    so: Shape3,
    k: usize,
    stride: usize,
) {
    for oy in 0..so.h {
        for ox in 0..so.w {
            let mut at = (oy * stride) * si.w + ox * stride;
            let mut best = x[at];
            for u in 0..k {
                for v in 0..k {
                    let j = (oy * stride + u) * si.w + ox * stride + v;
                    if takes(x[j], best) {
                        best = x[j];
                        at = j;
                    }
                }
            }
            y[oy * so.w + ox] = best;
            am[oy * so.w + ox] = at as u32;
        }
    }
}

/// Max pooling of one plane, window `k`, dispatched on `k`.
#[allow(clippy::too_many_arguments)]
fn max_pool_plane(
    y: &mut [f32],
    am: &mut [u32],
    x: &[f32],
    si: Shape3,
    so: Shape3,
    k: usize,
    stride: usize,
) {
    match k {
        2 if stride == 2 => max_pool_2x2(y, am, x, si, so),
        2 => max_pool::<2>(y, am, x, si, so, stride),
        3 => max_pool::<3>(y, am, x, si, so, stride),
        _ => max_pool_any(y, am, x, si, so, k, stride),
    }
}

/// Dropout on `(C, N, H, W)`: `x *= mask`, the mask of value `(c, h, w)`
/// of image `i` drawn at index `(first + i) * C * H * W + (c * H + h) * W + w`.
fn dropout_apply(
    x: &mut [f32],
    s: Shape3,
    n: usize,
    (seed, step, first): (u64, u64, usize),
    layer: u32,
    p: f32,
) {
    let hw = s.h * s.w;
    let f = s.len();
    for c in 0..s.c {
        for i in 0..n {
            let base = ((first + i) * f + c * hw) as u64;
            for (q, v) in x[(c * n + i) * hw..][..hw].iter_mut().enumerate() {
                *v *= dropout::mask(seed, step, layer, base + q as u64, p);
            }
        }
    }
}

/// Forward pass of `n` images `x (1, N, 28, 28)`; the logits are left in
/// the last step's buffer, `(10, N)`.
fn forward(ctx: Ctx<'_>, work: &mut Work, x: &[f32], n: usize) {
    let Work {
        bufs,
        argmax,
        col,
        tmp,
        ..
    } = work;
    let mut pool_no = 0;
    let mut cur = 0;
    let mut pooled = false;
    for (sj, st) in ctx.plan.steps.iter().enumerate() {
        if core::mem::take(&mut pooled) {
            // Done with the convolution before it.
            pool_no += 1;
            cur = st.buf;
            continue;
        }
        let (si, so) = (st.input, st.output);
        // Input buffer (cur) and output buffer (st.buf) are distinct unless
        // the step works in place.
        let mut out = if st.in_place {
            Vec::new()
        } else {
            core::mem::take(&mut bufs[st.buf - 1])
        };
        // The pooling's output, when it runs with this convolution.
        let mut pout = match st.pool {
            Some(_) => core::mem::take(&mut bufs[ctx.plan.steps[sj + 1].buf - 1]),
            None => Vec::new(),
        };
        let input: &[f32] = if cur == 0 { x } else { &bufs[cur - 1] };
        match st.op {
            Op::Conv { k, pad, stride, w } if st.pool.is_some() => {
                // Convolution and the max pooling after it, block by block
                // through `tmp`: the convolution's output is never stored
                // (the pooling's backward needs only its argmax).
                let (pk, ps) = st.pool.unwrap_or((1, 1));
                let next = &ctx.plan.steps[sj + 1];
                let po = next.output;
                let (ohw, pohw) = (so.h * so.w, po.h * po.w);
                let rows = si.c * k * k;
                let (wt, bias) = (&ctx.params[w..], &ctx.params[w + so.c * rows..]);
                let am = &mut argmax[pool_no];
                let mut g0 = 0;
                while g0 < n {
                    let g1 = (g0 + st.group).min(n);
                    let cols = (g1 - g0) * ohw;
                    im2col(col, input, n, si, so, (k, pad, stride), g0, g1);
                    // tmp (C_OUT, G * OH * OW) = b + w . col
                    for (co, row) in tmp[..so.c * cols].chunks_exact_mut(cols).enumerate() {
                        row.fill(bias[co]);
                    }
                    sgemm(
                        tmp,
                        cols,
                        1,
                        1.0,
                        View {
                            data: wt,
                            rs: rows,
                            cs: 1,
                        },
                        View {
                            data: &col[..rows * cols],
                            rs: cols,
                            cs: 1,
                        },
                        so.c,
                        cols,
                        rows,
                    );
                    for co in 0..so.c {
                        for g in 0..g1 - g0 {
                            let p = (co * n + g0 + g) * pohw;
                            let src = &tmp[co * cols + g * ohw..];
                            max_pool_plane(&mut pout[p..], &mut am[p..], src, so, po, pk, ps);
                        }
                    }
                    g0 = g1;
                }
                pooled = true;
            }
            Op::Conv { k, pad, stride, w } => {
                let rows = si.c * k * k;
                let ohw = so.h * so.w;
                let (wt, bias) = (&ctx.params[w..], &ctx.params[w + so.c * rows..]);
                // y = b, then y += w . col per block of images.
                for (co, plane) in out[..so.c * n * ohw].chunks_exact_mut(n * ohw).enumerate() {
                    plane.fill(bias[co]);
                }
                let mut g0 = 0;
                while g0 < n {
                    let g1 = (g0 + st.group).min(n);
                    let cols = (g1 - g0) * ohw;
                    im2col(col, input, n, si, so, (k, pad, stride), g0, g1);
                    sgemm(
                        &mut out[g0 * ohw..],
                        n * ohw,
                        1,
                        1.0,
                        View {
                            data: wt,
                            rs: rows,
                            cs: 1,
                        },
                        View {
                            data: &col[..rows * cols],
                            rs: cols,
                            cs: 1,
                        },
                        so.c,
                        cols,
                        rows,
                    );
                    g0 = g1;
                }
            }
            Op::Linear { w } => {
                let (fi, fo) = (si.len(), so.len());
                let (wt, bias) = (&ctx.params[w..], &ctx.params[w + fo * fi..]);
                for (o, row) in out[..fo * n].chunks_exact_mut(n).enumerate() {
                    row.fill(bias[o]);
                }
                // y (F_OUT, N) += w (F_OUT, F_IN) . x (F_IN, N)
                sgemm(
                    &mut out,
                    n,
                    1,
                    1.0,
                    View {
                        data: wt,
                        rs: fi,
                        cs: 1,
                    },
                    View {
                        data: input,
                        rs: n,
                        cs: 1,
                    },
                    fo,
                    n,
                    fi,
                );
            }
            Op::MaxPool { k, stride } => {
                let am = &mut argmax[pool_no];
                pool_no += 1;
                let (ihw, ohw) = (si.h * si.w, so.h * so.w);
                for p in 0..si.c * n {
                    let (yp, ap) = (&mut out[p * ohw..], &mut am[p * ohw..]);
                    max_pool_plane(yp, ap, &input[p * ihw..], si, so, k, stride);
                }
            }
            Op::AvgPool { k, stride } => {
                let (ihw, ohw) = (si.h * si.w, so.h * so.w);
                let inv = 1.0 / (k * k) as f32;
                for p in 0..si.c * n {
                    let xp = &input[p * ihw..][..ihw];
                    for oy in 0..so.h {
                        for ox in 0..so.w {
                            let mut s = 0.0;
                            for u in 0..k {
                                for v in 0..k {
                                    s += xp[(oy * stride + u) * si.w + ox * stride + v];
                                }
                            }
                            out[p * ohw + oy * so.w + ox] = s * inv;
                        }
                    }
                }
            }
            Op::Act => {
                if st.in_place {
                    ctx.act.forward_in_place(&mut bufs[cur - 1][..so.len() * n]);
                } else {
                    ctx.act
                        .forward(&mut out[..so.len() * n], &input[..so.len() * n]);
                }
            }
            Op::Dropout { p } => {
                out[..so.len() * n].copy_from_slice(&input[..so.len() * n]);
                if let Some(d) = ctx.dropout {
                    dropout_apply(&mut out, so, n, d, st.index, p);
                }
            }
            Op::Flatten => {
                // (C, N, H * W) -> (C * H * W, N)
                let hw = si.h * si.w;
                for c in 0..si.c {
                    for i in 0..n {
                        let src = &input[(c * n + i) * hw..][..hw];
                        for (q, &v) in src.iter().enumerate() {
                            out[(c * hw + q) * n + i] = v;
                        }
                    }
                }
            }
            Op::Upsample => {
                resize::forward(input, si.c * n, si.h, si.w, &mut out, so.h, so.w);
            }
        }
        if !st.in_place {
            bufs[st.buf - 1] = out;
        }
        if st.pool.is_some() {
            bufs[ctx.plan.steps[sj + 1].buf - 1] = pout;
        }
        cur = st.buf;
    }
}

/// Backward pass after [`forward`] on the same images: `dlogits (10, N)` is
/// in `work.da`; accumulates into `grad` (flat, `state_dict` order).
fn backward(ctx: Ctx<'_>, work: &mut Work, x: &[f32], n: usize, grad: &mut [f32]) {
    let Work {
        bufs,
        argmax,
        col,
        da,
        db,
        ..
    } = work;
    let plan = ctx.plan;
    let mut pool_no = argmax.len();
    // `d` holds dL/d(output of step j); `e` receives dL/d(input).
    let (mut d, mut e) = (da, db);
    for j in (plan.first_param..plan.steps.len()).rev() {
        let st = plan.steps[j];
        let (si, so) = (st.input, st.output);
        let in_buf = if j == 0 { 0 } else { plan.steps[j - 1].buf };
        let input: &[f32] = if in_buf == 0 { x } else { &bufs[in_buf - 1] };
        let need_dx = j > plan.first_param;
        match st.op {
            Op::Conv { k, pad, stride, w } => {
                let rows = si.c * k * k;
                let ohw = so.h * so.w;
                let wt = &ctx.params[w..w + so.c * rows];
                let (gw, gb) = grad[w..].split_at_mut(so.c * rows);
                // dL/db[o] = sum_{i,y,x} dy[o][i][y][x]
                for (co, plane) in d[..so.c * n * ohw].chunks_exact(n * ohw).enumerate() {
                    gb[co] += plane.iter().sum::<f32>();
                }
                if need_dx {
                    e[..si.len() * n].fill(0.0);
                }
                let mut g0 = 0;
                while g0 < n {
                    let g1 = (g0 + st.group).min(n);
                    let cols = (g1 - g0) * ohw;
                    im2col(col, input, n, si, so, (k, pad, stride), g0, g1);
                    let dy = View {
                        data: &d[g0 * ohw..],
                        rs: n * ohw,
                        cs: 1,
                    };
                    // dL/dw[o][r] += sum_c dy[o][c] * col[r][c]
                    sgemm(
                        gw,
                        rows,
                        1,
                        1.0,
                        dy,
                        View {
                            data: &col[..rows * cols],
                            rs: 1,
                            cs: cols,
                        },
                        so.c,
                        rows,
                        cols,
                    );
                    if need_dx {
                        // dL/dcol[r][c] = sum_o w[o][r] * dy[o][c], then
                        // dL/dx = col2im(dcol)
                        sgemm(
                            &mut col[..rows * cols],
                            cols,
                            1,
                            0.0,
                            View {
                                data: wt,
                                rs: 1,
                                cs: rows,
                            },
                            dy,
                            rows,
                            cols,
                            so.c,
                        );
                        col2im(e, col, n, si, so, (k, pad, stride), g0, g1);
                    }
                    g0 = g1;
                }
            }
            Op::Linear { w } => {
                let (fi, fo) = (si.len(), so.len());
                let wt = &ctx.params[w..w + fo * fi];
                let (gw, gb) = grad[w..].split_at_mut(fo * fi);
                // dL/db[o] = sum_i dy[o][i]
                for (o, row) in d[..fo * n].chunks_exact(n).enumerate() {
                    gb[o] += row.iter().sum::<f32>();
                }
                let dy = View {
                    data: &d[..fo * n],
                    rs: n,
                    cs: 1,
                };
                // dL/dw[o][f] += sum_i dy[o][i] * x[f][i]
                sgemm(
                    gw,
                    fi,
                    1,
                    1.0,
                    dy,
                    View {
                        data: input,
                        rs: 1,
                        cs: n,
                    },
                    fo,
                    fi,
                    n,
                );
                if need_dx {
                    // dL/dx[f][i] = sum_o w[o][f] * dy[o][i]
                    sgemm(
                        e,
                        n,
                        1,
                        0.0,
                        View {
                            data: wt,
                            rs: 1,
                            cs: fi,
                        },
                        dy,
                        fi,
                        n,
                        fo,
                    );
                }
            }
            Op::MaxPool { k: _, stride: _ } => {
                pool_no -= 1;
                let am = &argmax[pool_no];
                let (ihw, ohw) = (si.h * si.w, so.h * so.w);
                // dL/dx[argmax] += dy
                e[..si.len() * n].fill(0.0);
                for p in 0..si.c * n {
                    let ep = &mut e[p * ihw..][..ihw];
                    for q in 0..ohw {
                        ep[am[p * ohw + q] as usize] += d[p * ohw + q];
                    }
                }
            }
            Op::AvgPool { k, stride } => {
                let (ihw, ohw) = (si.h * si.w, so.h * so.w);
                let inv = 1.0 / (k * k) as f32;
                // dL/dx[y * S + u][x * S + v] += dy[y][x] / K^2
                e[..si.len() * n].fill(0.0);
                for p in 0..si.c * n {
                    let ep = &mut e[p * ihw..][..ihw];
                    for oy in 0..so.h {
                        for ox in 0..so.w {
                            let g = d[p * ohw + oy * so.w + ox] * inv;
                            for u in 0..k {
                                for v in 0..k {
                                    ep[(oy * stride + u) * si.w + ox * stride + v] += g;
                                }
                            }
                        }
                    }
                }
            }
            Op::Act => {
                // dL/dx = dL/dy * act'(x), from y
                let y = &bufs[st.buf - 1][..so.len() * n];
                ctx.act.backward_in_place(&mut d[..so.len() * n], y);
                if !st.in_place {
                    e[..so.len() * n].copy_from_slice(&d[..so.len() * n]);
                }
            }
            Op::Dropout { p } => {
                // dL/dx = dL/dy * mask
                e[..so.len() * n].copy_from_slice(&d[..so.len() * n]);
                if let Some(dr) = ctx.dropout {
                    dropout_apply(e, so, n, dr, st.index, p);
                }
            }
            Op::Flatten => {
                // (C * H * W, N) -> (C, N, H * W)
                let hw = si.h * si.w;
                for c in 0..si.c {
                    for i in 0..n {
                        let dst = &mut e[(c * n + i) * hw..][..hw];
                        for (q, v) in dst.iter_mut().enumerate() {
                            *v = d[(c * hw + q) * n + i];
                        }
                    }
                }
            }
            Op::Upsample => {
                if need_dx {
                    resize::backward(d, si.c * n, si.h, si.w, so.h, so.w, e);
                }
            }
        }
        if !st.in_place {
            core::mem::swap(&mut d, &mut e);
        }
    }
}

/// Mean-loss numerator and `dlogits` of a chunk: reads the logits
/// `(10, N)`, writes `scale * (softmax - onehot)` to `dl (10, N)`, returns
/// the summed loss.
fn loss_grad(dl: &mut [f32], logits: &[f32], labels: &[u8], scale: f32) -> f64 {
    let n = labels.len();
    let mut loss = 0.0f64;
    for (i, &t) in labels.iter().enumerate() {
        let z: [f32; CLASSES] = core::array::from_fn(|j| logits[j * n + i]);
        loss += f64::from(cross_entropy(&z, t as usize));
        let mut dz = [0.0f32; CLASSES];
        cross_entropy_backward(&mut dz, &z, t as usize, scale);
        for (j, v) in dz.iter().enumerate() {
            dl[j * n + i] = *v;
        }
    }
    loss
}

/// One thread's share of a training step on the layer-by-layer path:
/// forward, loss and backward of `labels.len()` images into `grad`
/// (overwritten); returns the summed loss. `dropout` is `(seed, optimizer
/// step, first image's position in the batch)`.
///
/// # Errors
/// A buffer cannot be allocated.
#[allow(clippy::too_many_arguments)]
pub(super) fn train_chunk(
    plan: &Plan,
    params: &[f32],
    act: Activation,
    dropout: (u64, u64, usize),
    work: &mut Work,
    x: &[f32],
    labels: &[u8],
    scale: f32,
    grad: &mut [f32],
) -> Result<f64, TrainerError> {
    let ctx = Ctx {
        plan,
        params,
        act,
        dropout: Some(dropout),
    };
    let m = labels.len();
    work.ensure(plan, m)?;
    grad.fill(0.0);
    forward(ctx, work, x, m);
    let last = plan.steps.last().map_or(0, |s| s.buf);
    let logits = &work.bufs[last - 1][..CLASSES * m];
    let loss = loss_grad(&mut work.da, logits, labels, scale);
    backward(ctx, work, x, m, grad);
    Ok(loss)
}

/// Inference of one thread's share on the layer-by-layer path, in blocks
/// of [`INFER_BLOCK`] images: `x` holds `N` images, `out` their `N x 10`
/// logits (image-major).
///
/// # Errors
/// A buffer cannot be allocated.
pub(super) fn forward_chunk(
    plan: &Plan,
    params: &[f32],
    act: Activation,
    work: &mut Work,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), TrainerError> {
    let ctx = Ctx {
        plan,
        params,
        act,
        dropout: None,
    };
    let last = plan.steps.last().map_or(0, |s| s.buf);
    let n = out.len() / CLASSES;
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + INFER_BLOCK).min(n);
        let m = i1 - i0;
        work.ensure(plan, m)?;
        forward(ctx, work, &x[i0 * IMG..i1 * IMG], m);
        let l = &work.bufs[last - 1];
        for i in 0..m {
            for j in 0..CLASSES {
                out[(i0 + i) * CLASSES + j] = l[j * m + i];
            }
        }
        i0 = i1;
    }
    Ok(())
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
