//! The CUDA trainer: one implementation of [`Trainer`] for any network
//! described as data ([`Arch::layers`]), running on a [`Device`]: the
//! GPU through the CUDA driver (feature `cuda`) or the emulated device,
//! which runs the same kernel sources on the CPU (feature `cuda-emu`).
//!
//! The layer list becomes a schedule of kernel launches:
//!
//! - forward: one launch per convolution or linear layer (bias and the
//!   activation that follows fused in), per pooling, upsampling or dropout
//!   layer, and per activation that follows a layer it cannot be fused
//!   into (in place). Dropout multiplies by lenet-core's seeded mask in
//!   training and is skipped in [`Trainer::forward`] (inference: the next
//!   layer reads the dropout's input);
//! - the loss: one launch for softmax cross-entropy, the batch's mean loss
//!   written to a per-step slot on the device;
//! - backward: per layer with parameters, one launch for the weight and
//!   bias gradients; per layer, one for the input gradient, skipped where
//!   no layer before it has parameters (the first layer, and the first
//!   convolution after an upsampling of the input). Dropout's backward
//!   recomputes its mask. The derivative of an activation is applied by
//!   the next layer's input-gradient kernel, from the activation's output,
//!   which the forward pass keeps;
//! - the optimizer: one launch over all parameters, which live in one flat
//!   buffer in `state_dict` order (as the gradients and moments do).
//!
//! For the classic LeNet-5 that is 21 launches per training step, and no
//! transfer: with [`Trainer::train_epoch`] the training set stays on the
//! device, each batch is gathered, augmented and normalized there from the
//! epoch's order and augmentation lists (uploaded once per epoch), and the
//! losses of all steps are read back once at the end of the epoch.
//!
//! Gradient kernels write (not accumulate) their outputs, so no zeroing
//! launch is needed. Every reduction has a fixed order (no atomics): a
//! given device computes the same bits every run.

pub mod args;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod ops;
#[cfg(test)]
mod tests;

use lenet_core::activation::Activation;
use lenet_core::dropout;
use lenet_core::model::{Arch, INPUT_SHAPE, Layer, Plan, Shape3};

use crate::backend::{
    EpochPlan, OptimizerConfig, OptimizerState, Trainer, TrainerConfig, TrainerError, check_state,
    core_adam,
};
use args::KernelArgs;
use args::{
    ActArgs, AdamArgs, ConvArgs, DropoutArgs, GatherArgs, LinearArgs, LossArgs, PoolArgs, SgdArgs,
    UpsampleArgs,
};
use device::{BLOCK, DevPtr, Device, DeviceExt, Kernel, Mark};

/// The environment variable that makes the trainer wait for every launch
/// (`LENET_CUDA_SYNC=1`), so that a failing kernel is named with its grid,
/// block and arguments instead of surfacing at the next copy.
pub const SYNC_ENV: &str = "LENET_CUDA_SYNC";

/// Number of classes (outputs of the last layer).
const CLASSES: usize = 10;

/// Images per inference launch of a trainer that has not trained yet
/// (once it has, inference runs in chunks of its training batch).
const INFERENCE_CHUNK: usize = 256;

/// Largest convolution kernel side (`CONV_KMAX` of `lenet.cuh`).
const CONV_KMAX: usize = 11;

/// The activation's code in `lenet.cuh`.
fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Sigmoid => 1,
        Activation::Relu => 2,
        Activation::Tanh => 3,
    }
}

/// What one stage of the schedule computes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Conv {
        k: usize,
        s: usize,
        p: usize,
    },
    Pool {
        k: usize,
        s: usize,
        max: bool,
    },
    /// The model's activation, in place on its input.
    Act,
    Linear,
    /// Bilinear resize to the stage's output shape.
    Upsample,
    /// Dropout with probability `p`; `layer` is its index in the layer
    /// list (an input of the mask).
    Dropout {
        p: f32,
        layer: u32,
    },
}

/// One stage: an op from value buffer `input` to value buffer `output`.
#[derive(Clone, Copy, Debug)]
struct Stage {
    op: Op,
    input: usize,
    output: usize,
    in_shape: Shape3,
    out_shape: Shape3,
    /// Activation fused into the output (a code of `lenet.cuh`).
    act: i32,
    /// Offsets of the weight and bias in the flat parameters.
    w_off: usize,
    b_off: usize,
}

/// A value buffer: a layer's output for a batch, and its gradient.
#[derive(Clone, Copy, Debug, Default)]
struct Val {
    /// Values per image.
    per_image: usize,
    /// Whether it holds the output of the model's activation (so the
    /// gradient kernels that write its gradient multiply by act').
    holds_act: bool,
    /// Whether max pooling writes its argmax indices next to it.
    has_arg: bool,
    /// Whether the loss's gradient with respect to it is needed: some
    /// layer before it has parameters (not so for the input, or for an
    /// upsampling of the input).
    needs_grad: bool,
    ptr: DevPtr,
    dptr: DevPtr,
    arg: DevPtr,
}

/// The schedule of a network: stages, value buffers, parameter count.
#[derive(Clone, Debug)]
struct Schedule {
    stages: Vec<Stage>,
    vals: Vec<Val>,
    params: usize,
    /// Floats of the weight-gradient workspace: the largest partial sums
    /// of a convolution whose weight gradient is a split GEMM.
    workspace: usize,
}

impl Schedule {
    /// Builds the schedule of `arch` from its plan.
    fn new(arch: Arch, act: i32) -> Result<Schedule, TrainerError> {
        let bad = |m: String| TrainerError::State(m);
        let plan = Plan::new(arch).map_err(|e| bad(format!("{arch}: {e}")))?;
        let layers = plan.layers();
        let mut vals = vec![Val {
            per_image: plan.input().len(),
            ..Val::default()
        }];
        let mut stages = Vec::new();
        let mut cur = 0;
        let mut i = 0;
        while i < layers.len() {
            let pl = &layers[i];
            let (layer, shape, out_shape) = (pl.layer, pl.input, pl.output);
            let (w_off, b_off) = pl
                .params
                .as_ref()
                .map_or((0, 0), |p| (p.weight.start, p.bias.start));
            let op = match layer {
                Layer::Conv2d { kernel, .. } if kernel > CONV_KMAX => {
                    return Err(bad(format!(
                        "layer {i}: the CUDA kernels take convolutions up to {CONV_KMAX}x{CONV_KMAX}"
                    )));
                }
                Layer::Conv2d {
                    kernel,
                    padding,
                    stride,
                    ..
                } => Some(Op::Conv {
                    k: kernel,
                    s: stride,
                    p: padding,
                }),
                Layer::Linear { .. } => Some(Op::Linear),
                Layer::AvgPool2d { kernel, stride } => Some(Op::Pool {
                    k: kernel,
                    s: stride,
                    max: false,
                }),
                Layer::MaxPool2d { kernel, stride } => Some(Op::Pool {
                    k: kernel,
                    s: stride,
                    max: true,
                }),
                Layer::Act => {
                    if cur == 0 || vals[cur].holds_act {
                        return Err(bad(format!(
                            "layer {i}: an activation must follow a layer that is not an activation"
                        )));
                    }
                    vals[cur].holds_act = true;
                    stages.push(Stage {
                        op: Op::Act,
                        input: cur,
                        output: cur,
                        in_shape: shape,
                        out_shape,
                        act,
                        w_off: 0,
                        b_off: 0,
                    });
                    None
                }
                Layer::Upsample { .. } => Some(Op::Upsample),
                Layer::Dropout { p } => Some(Op::Dropout {
                    p,
                    layer: u32::try_from(i).map_err(|e| bad(e.to_string()))?,
                }),
                Layer::Flatten => None,
                _ => return Err(bad(format!("layer {i}: {layer:?} has no CUDA kernel"))),
            };
            if let Some(op) = op {
                check_sizes(i, layer, shape, out_shape, w_off)?;
                // An activation right after a convolution or linear layer is
                // fused into its forward kernel.
                let fuse = matches!(op, Op::Conv { .. } | Op::Linear)
                    && layers.get(i + 1).map(|l| l.layer) == Some(Layer::Act);
                vals.push(Val {
                    per_image: out_shape.len(),
                    holds_act: fuse,
                    // The layer after this one needs its input's gradient.
                    needs_grad: pl.needs_input_grad || pl.params.is_some(),
                    has_arg: matches!(op, Op::Pool { max: true, .. }),
                    ..Val::default()
                });
                stages.push(Stage {
                    op,
                    input: cur,
                    output: vals.len() - 1,
                    in_shape: shape,
                    out_shape,
                    act: if fuse { act } else { 0 },
                    w_off,
                    b_off,
                });
                cur = vals.len() - 1;
                if fuse {
                    i += 1;
                }
            }
            i += 1;
        }
        if cur == 0 {
            return Err(bad(format!("{arch}: no layer computes the logits")));
        }
        let workspace = stages
            .iter()
            .filter_map(|st| match st.op {
                // (the larger of the two tiles' splits: the tile depends
                // on the batch)
                Op::Conv { k, .. } if conv_gemm(st.out_shape) => {
                    let (c, kdim) = (st.out_shape.c, st.in_shape.c * k * k);
                    let [small, large] =
                        [GemmTile::Small, GemmTile::Large].map(|tile| wgrad_splits(tile, c, kdim));
                    Some(small.max(large) * c * kdim)
                }
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(Schedule {
            stages,
            vals,
            params: plan.num_params(),
            workspace,
        })
    }

    /// Kernel launches of one training step.
    fn launches_per_step(&self) -> usize {
        let mut n = 3; // gather, loss, optimizer
        for st in &self.stages {
            n += 1;
            n += match st.op {
                Op::Conv { .. } if conv_gemm(st.out_shape) => {
                    2 + usize::from(self.vals[st.input].needs_grad)
                }
                Op::Conv { .. } | Op::Linear => 1 + usize::from(self.vals[st.input].needs_grad),
                Op::Pool { .. } | Op::Upsample | Op::Dropout { .. } => {
                    usize::from(self.vals[st.input].needs_grad)
                }
                Op::Act => 0,
            };
        }
        n
    }
}

/// Output channels from which a convolution's forward pass runs as a
/// register-tiled GEMM (`conv2d_forward_gemm`): its 64-row tiles are then
/// at least a quarter full; fewer channels take the direct kernel.
pub const CONV_GEMM_MIN_CHANNELS: usize = 16;

/// Whether a convolution with outputs of shape `out` runs as GEMMs
/// (forward and weight gradient).
pub fn conv_gemm(out: Shape3) -> bool {
    out.c >= CONV_GEMM_MIN_CHANNELS
}

/// A tile configuration of the register-tiled GEMM kernels (`gemm.cuh`):
/// the block's output tile is [`GemmTile::edge`] square.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmTile {
    /// 64 x 64 outputs per block, 4 x 4 per thread (`GemmSmall`).
    Small,
    /// 128 x 128 outputs per block, 8 x 8 per thread (`GemmLarge`): half
    /// the shared loads per multiply-add, for products large enough to
    /// fill the GPU with such tiles.
    Large,
}

impl GemmTile {
    /// Rows (and columns) of the block's output tile.
    pub const fn edge(self) -> usize {
        match self {
            GemmTile::Small => 64,
            GemmTile::Large => 128,
        }
    }

    /// Blocks that cover a `rows` x `cols` output.
    pub fn tiles(self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(self.edge()) * cols.div_ceil(self.edge())
    }
}

/// Depth (K) a block of [`GemmTile::Large`] must at least multiply over,
/// four slices of 16: a shallower product spends most of a block in
/// filling the first slice and writing its 64 outputs per thread.
pub const GEMM_LARGE_MIN_DEPTH: usize = 64;

/// Blocks a [`GemmTile::Large`] grid must at least have: about one per
/// multiprocessor of a large GPU (132 on an H100 SXM); a product with
/// fewer keeps the 64-wide tiles, four times as many blocks.
pub const GEMM_LARGE_MIN_BLOCKS: usize = 128;

/// Whether a side of `d` rows (or columns) fits 128-wide tiles: padded to
/// 128 at most 1/4 larger than padded to 64 (96 or 576 channels, yes; 64
/// or 192, no: half or a third of the tiles' rows would be empty), where
/// the large tiles' higher FMA share more than makes up for the padding.
fn fits_large(d: usize) -> bool {
    d.div_ceil(128) * 128 * 4 <= d.div_ceil(64) * 64 * 5
}

/// The tile configuration of an `m` x `n` GEMM output over depth `k`:
/// [`GemmTile::Large`] when both sides fit its tiles ([`fits_large`]), the
/// depth is at least [`GEMM_LARGE_MIN_DEPTH`] and its grid has at least
/// [`GEMM_LARGE_MIN_BLOCKS`] blocks; else [`GemmTile::Small`].
pub fn gemm_tile(m: usize, n: usize, k: usize) -> GemmTile {
    let large = fits_large(m)
        && fits_large(n)
        && k >= GEMM_LARGE_MIN_DEPTH
        && GemmTile::Large.tiles(m, n) >= GEMM_LARGE_MIN_BLOCKS;
    if large {
        GemmTile::Large
    } else {
        GemmTile::Small
    }
}

/// Chunks the weight-gradient GEMM of a convolution (`c_out` outputs,
/// `kdim` = C_IN K K taps) in tiles of `tile` cuts the batch's positions
/// into: enough blocks for a large GPU (about 256) when the layer has few
/// tiles, at most 64.
pub fn wgrad_splits(tile: GemmTile, c_out: usize, kdim: usize) -> usize {
    (256 / tile.tiles(c_out, kdim)).clamp(1, 64)
}

/// The tile configuration of a convolution's split weight-gradient GEMM
/// (`c_out` x `kdim`, over `positions` = N OH OW): as [`gemm_tile`], with
/// the splits in place of the block count (they make up for few tiles)
/// and the depth of one split.
pub fn wgrad_tile(c_out: usize, kdim: usize, positions: usize) -> GemmTile {
    let splits = wgrad_splits(GemmTile::Large, c_out, kdim);
    let large = fits_large(c_out) && fits_large(kdim) && positions / splits >= GEMM_LARGE_MIN_DEPTH;
    if large {
        GemmTile::Large
    } else {
        GemmTile::Small
    }
}

/// The GEMM tile configuration of `kernel`, `None` for the other kernels.
pub fn kernel_tile(kernel: Kernel) -> Option<GemmTile> {
    match kernel {
        Kernel::Conv2dForwardGemm
        | Kernel::Conv2dBackwardInputGemm
        | Kernel::Conv2dBackwardWeightGemm
        | Kernel::LinearForward
        | Kernel::LinearBackwardInput
        | Kernel::LinearBackwardWeight => Some(GemmTile::Small),
        Kernel::Conv2dForwardGemmLarge
        | Kernel::Conv2dBackwardInputGemmLarge
        | Kernel::Conv2dBackwardWeightGemmLarge
        | Kernel::LinearForwardLarge
        | Kernel::LinearBackwardInputLarge
        | Kernel::LinearBackwardWeightLarge => Some(GemmTile::Large),
        _ => None,
    }
}

/// Blocks of convolution kernel `kernel` for a batch of `n`, from `input`
/// to `out` with a `k` x `k` kernel: one thread per output (direct
/// forward) or input value (direct input gradient), one block per kernel
/// row and per bias (direct weight gradient), the output tiles of a GEMM,
/// times the splits for the split weight gradient, and one thread per
/// weight plus one block per bias for its reduction.
pub fn conv_grid(kernel: Kernel, n: usize, input: Shape3, out: Shape3, k: usize) -> usize {
    let threads = |items: usize| items.div_ceil(BLOCK as usize);
    let kdim = input.c * k * k;
    match (kernel, kernel_tile(kernel)) {
        (Kernel::Conv2dForward, _) => threads(n * out.len()),
        (Kernel::Conv2dForwardGemm | Kernel::Conv2dForwardGemmLarge, Some(t)) => {
            t.tiles(out.c, n * out.h * out.w)
        }
        (Kernel::Conv2dBackwardInput, _) => threads(n * input.len()),
        (Kernel::Conv2dBackwardInputGemm | Kernel::Conv2dBackwardInputGemmLarge, Some(t)) => {
            t.tiles(input.c, n * input.h * input.w)
        }
        (Kernel::Conv2dBackwardWeight, _) => out.c * input.c * k + out.c,
        (Kernel::Conv2dBackwardWeightGemm | Kernel::Conv2dBackwardWeightGemmLarge, Some(t)) => {
            t.tiles(out.c, kdim) * wgrad_splits(t, out.c, kdim)
        }
        _ => threads(out.c * kdim) + out.c,
    }
}

/// The forward kernel of a convolution of a batch of `n` from `input` to
/// `out` with a `k` x `k` kernel: a GEMM ([`conv_gemm`]) of C_OUT x
/// N OH OW outputs over C_IN K K, its tiles by [`gemm_tile`].
pub fn conv_forward(n: usize, input: Shape3, out: Shape3, k: usize) -> Kernel {
    if !conv_gemm(out) {
        return Kernel::Conv2dForward;
    }
    match gemm_tile(out.c, n * out.h * out.w, input.c * k * k) {
        GemmTile::Small => Kernel::Conv2dForwardGemm,
        GemmTile::Large => Kernel::Conv2dForwardGemmLarge,
    }
}

/// The input-gradient kernel of a convolution with stride `s` (shapes as
/// [`conv_forward`]): a GEMM for stride 1 and at least
/// [`CONV_GEMM_MIN_CHANNELS`] input channels (its rows), C_IN x N H W
/// outputs over C_OUT K K, its tiles by [`gemm_tile`].
pub fn conv_backward_input(n: usize, input: Shape3, out: Shape3, k: usize, s: usize) -> Kernel {
    if s != 1 || input.c < CONV_GEMM_MIN_CHANNELS {
        return Kernel::Conv2dBackwardInput;
    }
    match gemm_tile(input.c, n * input.h * input.w, out.c * k * k) {
        GemmTile::Small => Kernel::Conv2dBackwardInputGemm,
        GemmTile::Large => Kernel::Conv2dBackwardInputGemmLarge,
    }
}

/// The weight-gradient kernel of a convolution (shapes as
/// [`conv_forward`]): the split GEMM ([`conv_gemm`]; followed by
/// `Conv2dBackwardWeightReduce`), its tiles by [`wgrad_tile`], or the
/// direct kernel.
pub fn conv_backward_weight(n: usize, input: Shape3, out: Shape3, k: usize) -> Kernel {
    if !conv_gemm(out) {
        return Kernel::Conv2dBackwardWeight;
    }
    match wgrad_tile(out.c, input.c * k * k, n * out.h * out.w) {
        GemmTile::Small => Kernel::Conv2dBackwardWeightGemm,
        GemmTile::Large => Kernel::Conv2dBackwardWeightGemmLarge,
    }
}

/// The kernels of a linear layer for a batch of `n`, `f_in` to `f_out`
/// features: forward (N x F_OUT over F_IN), input gradient (N x F_IN over
/// F_OUT) and weight gradient (F_OUT x F_IN over N), each with its tiles
/// by [`gemm_tile`].
pub fn linear_kernels(n: usize, f_in: usize, f_out: usize) -> [Kernel; 3] {
    let pick = |small, large, m, c, k| match gemm_tile(m, c, k) {
        GemmTile::Small => small,
        GemmTile::Large => large,
    };
    [
        pick(
            Kernel::LinearForward,
            Kernel::LinearForwardLarge,
            n,
            f_out,
            f_in,
        ),
        pick(
            Kernel::LinearBackwardInput,
            Kernel::LinearBackwardInputLarge,
            n,
            f_in,
            f_out,
        ),
        pick(
            Kernel::LinearBackwardWeight,
            Kernel::LinearBackwardWeightLarge,
            f_out,
            f_in,
            n,
        ),
    ]
}

/// Blocks of a linear layer's kernel for a batch of `n` (see `linear.cu`):
/// the output tiles of its product, and for the weight gradient one more
/// block per [`BLOCK`] biases.
pub fn linear_grid(kernel: Kernel, n: usize, f_in: usize, f_out: usize) -> usize {
    let t = kernel_tile(kernel).unwrap_or(GemmTile::Small);
    match kernel {
        Kernel::LinearForward | Kernel::LinearForwardLarge => t.tiles(n, f_out),
        Kernel::LinearBackwardInput | Kernel::LinearBackwardInputLarge => t.tiles(n, f_in),
        _ => t.tiles(f_out, f_in) + f_out.div_ceil(BLOCK as usize),
    }
}

/// Checks every size of layer `i` that reaches a kernel (its output per
/// image, its parameters and those before them, a linear layer's weight
/// gradient threads) against the kernels' indexing; the batch multiplies
/// the per-image sizes later, in `ensure_capacity`.
fn check_sizes(
    i: usize,
    layer: Layer,
    in_shape: Shape3,
    out_shape: Shape3,
    off: usize,
) -> Result<(), TrainerError> {
    let what = |s: &'static str| move || format!("layer {i} ({layer:?}): {s}");
    checked(Some(out_shape.len()), &what("its output per image"))?;
    checked(
        off.checked_add(layer.num_params()),
        &what("the parameter count up to it"),
    )?;
    if matches!(layer, Layer::Linear { .. }) {
        let threads = out_shape
            .len()
            .checked_mul(in_shape.len())
            .and_then(|w| w.checked_add(out_shape.len()));
        checked(threads, &what("its weights and biases"))?;
    }
    Ok(())
}

/// One kernel's share of a profiled training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel.
    pub kernel: Kernel,
    /// Its launches in the step.
    pub launches: usize,
    /// Their device time, milliseconds.
    pub ms: f64,
}

/// A training step timed launch by launch ([`GpuTrainer::profile_step`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepProfile {
    /// Every kernel launched, in the order of its first launch.
    pub kernels: Vec<KernelTime>,
    /// Launches in the step.
    pub launches: usize,
    /// From the start of the first launch to the end of the last,
    /// milliseconds (the kernels' time plus the gaps between them).
    pub step_ms: f64,
}

impl core::fmt::Display for StepProfile {
    /// A table: kernel, launches, total ms, % of the step; then the totals.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "{:<24} {:>8} {:>10} {:>7}",
            "kernel", "launches", "total ms", "% step"
        )?;
        let pct = |ms: f64| {
            if self.step_ms > 0.0 {
                100.0 * ms / self.step_ms
            } else {
                0.0
            }
        };
        for k in &self.kernels {
            writeln!(
                f,
                "{:<24} {:>8} {:>10.3} {:>6.1}%",
                k.kernel.name(),
                k.launches,
                k.ms,
                pct(k.ms)
            )?;
        }
        let busy: f64 = self.kernels.iter().map(|k| k.ms).sum();
        write!(
            f,
            "{:<24} {:>8} {:>10.3} {:>6.1}%  (step {:.3} ms, first launch to last)",
            "all kernels",
            self.launches,
            busy,
            pct(busy),
            self.step_ms
        )
    }
}

/// The training set on the device.
struct DeviceSet {
    /// Identity of the host copy it came from: length and digest of the
    /// images and labels (an address can be reused by another data set).
    key: (usize, u64),
    images: DevPtr,
    labels: DevPtr,
}

/// The CUDA trainer on device `D` (see the module docs).
pub struct GpuTrainer<D: Device> {
    dev: D,
    config: TrainerConfig,
    sched: Schedule,
    lr: f32,
    step: u64,
    params: DevPtr,
    grads: DevPtr,
    m: DevPtr,
    v: DevPtr,
    /// The convolutions' weight-gradient partial sums (0: none needed).
    workspace: DevPtr,
    /// Whether `m` holds SGD momentum (it is created on the first step
    /// that uses it, as in the CPU trainer).
    sgd_has_m: bool,
    /// Batch capacity of the value buffers.
    cap: usize,
    /// Whether the value buffers have their gradients (not so when only
    /// inference has run).
    cap_grads: bool,
    /// Wait for every launch and name a failing one (see [`SYNC_ENV`]).
    sync_launches: bool,
    /// In a profiled step: each launch's kernel and its start and end.
    profile: Option<Vec<(Kernel, Mark, Mark)>>,
    labels: DevPtr,
    losses: DevPtr,
    losses_cap: usize,
    set: Option<DeviceSet>,
    order: DevPtr,
    aug: DevPtr,
    order_cap: usize,
}

fn ptr_at(base: DevPtr, floats: usize) -> DevPtr {
    base + (floats * 4) as u64
}

fn lr_of(opt: OptimizerConfig) -> f32 {
    match opt {
        OptimizerConfig::Adam { lr, .. } | OptimizerConfig::Sgd { lr, .. } => lr,
    }
}

/// The largest size the kernels index: they index values with `int`, and
/// a grid's last block may run up to `BLOCK - 1` threads past the end.
const INDEX_LIMIT: usize = i32::MAX as usize - BLOCK as usize;

/// `v` as the kernels' `int`, or an error naming `what` (the layer or
/// buffer it sizes).
fn checked(v: Option<usize>, what: &dyn Fn() -> String) -> Result<i32, TrainerError> {
    match v {
        Some(v) if v <= INDEX_LIMIT => Ok(v as i32),
        _ => Err(TrainerError::State(format!(
            "{} is beyond the CUDA kernels' 32-bit indexing (at most {INDEX_LIMIT})",
            what()
        ))),
    }
}

fn int(v: usize) -> i32 {
    // Every size here passed `checked`: per image and per layer in
    // `Schedule::new`, times the batch in `ensure_capacity`.
    debug_assert!(v <= INDEX_LIMIT);
    v as i32
}

/// The message of a device error, without the device's name in front.
fn msg_of(e: TrainerError) -> String {
    match e {
        TrainerError::Device { msg, .. } => msg,
        other => other.to_string(),
    }
}

/// Mebibytes, for messages.
fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A 64-bit digest of `bytes` (FNV-1a over 8-byte words, then the tail),
/// the identity of a data set on the device.
fn digest(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

impl<D: Device> GpuTrainer<D> {
    /// A trainer for `config` on `dev`, starting from `init` (flat,
    /// `state_dict` order).
    ///
    /// # Errors
    /// A network the kernels cannot run, a wrong parameter count, or a
    /// device failure.
    pub fn new(mut dev: D, config: &TrainerConfig, init: &[f32]) -> Result<Self, TrainerError> {
        let sched = Schedule::new(config.arch, act_code(config.act))?;
        let n = sched.params;
        if init.len() != n {
            return Err(TrainerError::State(format!(
                "expected {n} parameters, got {}",
                init.len()
            )));
        }
        let params = dev.alloc(n * 4)?;
        let grads = dev.alloc(n * 4)?;
        // The optimizer's moments start at zero (Adam reads both; SGD's
        // momentum buffer is written on its first step).
        let m = dev.alloc_zeroed(n * 4)?;
        let v = dev.alloc_zeroed(n * 4)?;
        let workspace = match sched.workspace {
            0 => 0,
            len => dev.alloc(len * 4)?,
        };
        dev.upload_slice(params, init)?;
        Ok(GpuTrainer {
            dev,
            config: config.clone(),
            sched,
            lr: lr_of(config.optimizer),
            step: 0,
            params,
            grads,
            m,
            v,
            workspace,
            sgd_has_m: false,
            cap: 0,
            cap_grads: false,
            sync_launches: std::env::var(SYNC_ENV).is_ok_and(|v| v == "1"),
            profile: None,
            labels: 0,
            losses: 0,
            losses_cap: 0,
            set: None,
            order: 0,
            aug: 0,
            order_cap: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Kernel launches of one training step (21 for the classic LeNet-5).
    pub fn launches_per_step(&self) -> usize {
        self.sched.launches_per_step()
    }

    fn device_err(&self, msg: String) -> TrainerError {
        TrainerError::Device {
            device: self.dev.kind(),
            msg,
        }
    }

    /// Makes the value buffers hold batches of `n` images, with their
    /// gradients if `grads` (training). Growing is all or nothing: on a
    /// failure every value buffer is released and the capacity is 0.
    fn ensure_capacity(&mut self, n: usize, grads: bool) -> Result<(), TrainerError> {
        if n <= self.cap && (self.cap_grads || !grads) {
            return Ok(());
        }
        let biggest = self
            .sched
            .vals
            .iter()
            .map(|v| v.per_image)
            .max()
            .unwrap_or(0);
        checked(n.checked_mul(biggest), &|| {
            format!("a batch of {n} images (its largest layer output)")
        })
        .map_err(|e| self.device_err(msg_of(e)))?;
        let need = self.buffer_bytes(n, grads);
        let what = format!(
            "a batch of {n} images needs {} for the layer outputs{}",
            mib(need),
            if grads { " and their gradients" } else { "" },
        );
        let released = self.buffer_bytes(self.cap, self.cap_grads);
        self.check_free(need, released, self.buffer_bytes(1, grads), &what)?;
        self.release_buffers()?;
        let r = self.alloc_buffers(n, grads);
        if r.is_err() {
            // Whatever the failure, leave no freed or half-made buffer
            // behind: everything released, capacity 0.
            let _ = self.release_buffers();
        }
        r
    }

    /// Device bytes of the value buffers (and labels) for batches of `n`.
    fn buffer_bytes(&self, n: usize, grads: bool) -> usize {
        let per_image: usize = self
            .sched
            .vals
            .iter()
            .enumerate()
            .map(|(i, v)| v.per_image * (1 + usize::from(grads && i > 0) + usize::from(v.has_arg)))
            .sum();
        n * (per_image + 1) * 4
    }

    /// Refuses to allocate `need` bytes (after releasing `released`) when
    /// the device says fewer are free; `per_image` of them grow with each
    /// image, and `what` says what needs them.
    fn check_free(
        &mut self,
        need: usize,
        released: usize,
        per_image: usize,
        what: &str,
    ) -> Result<(), TrainerError> {
        let Some(free) = self.dev.free_memory()? else {
            return Ok(());
        };
        let avail = free.saturating_add(released);
        if need <= avail {
            return Ok(());
        }
        let fits = avail / per_image.max(1);
        let fits = if fits == 0 {
            "not even one image fits".to_string()
        } else {
            format!("a batch of {fits} fits")
        };
        Err(self.device_err(format!(
            "{what}, but the device has {} free: {fits}",
            mib(free)
        )))
    }

    /// Frees every value buffer and the labels; capacity 0.
    fn release_buffers(&mut self) -> Result<(), TrainerError> {
        self.cap = 0;
        self.cap_grads = false;
        let mut first_err = None;
        let mut ptrs = vec![std::mem::take(&mut self.labels)];
        for v in &mut self.sched.vals {
            ptrs.extend([
                std::mem::take(&mut v.ptr),
                std::mem::take(&mut v.dptr),
                std::mem::take(&mut v.arg),
            ]);
        }
        for p in ptrs.into_iter().filter(|&p| p != 0) {
            if let Err(e) = self.dev.free(p) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Allocates the value buffers and labels for batches of `n` (all
    /// released before).
    fn alloc_buffers(&mut self, n: usize, grads: bool) -> Result<(), TrainerError> {
        for i in 0..self.sched.vals.len() {
            let v = self.sched.vals[i];
            let bytes = n * v.per_image * 4;
            self.sched.vals[i].ptr = self.dev.alloc(bytes)?;
            if grads && i > 0 {
                self.sched.vals[i].dptr = self.dev.alloc(bytes)?;
            }
            if v.has_arg {
                self.sched.vals[i].arg = self.dev.alloc(bytes)?;
            }
        }
        self.labels = self.dev.alloc(n * 4)?;
        self.cap = n;
        self.cap_grads = grads;
        Ok(())
    }

    /// Launches `kernel` with one thread per item of `items` (at least one
    /// block); see [`GpuTrainer::launch`].
    fn launch_over<A: KernelArgs>(
        &mut self,
        kernel: Kernel,
        items: usize,
        args: &A,
    ) -> Result<(), TrainerError> {
        self.launch_blocks(kernel, items.div_ceil(BLOCK as usize), args)
    }

    /// Launches `kernel` on `blocks` blocks (at least one); see
    /// [`GpuTrainer::launch`].
    fn launch_blocks<A: KernelArgs>(
        &mut self,
        kernel: Kernel,
        blocks: usize,
        args: &A,
    ) -> Result<(), TrainerError> {
        let grid = u32::try_from(blocks.max(1)).map_err(|_| {
            self.device_err(format!(
                "{}: {blocks} blocks exceed one grid",
                kernel.name()
            ))
        })?;
        self.launch(kernel, grid, args)
    }

    /// Launches `kernel` on `grid` blocks of [`BLOCK`] threads. With
    /// [`SYNC_ENV`] set it waits for the kernel, and a failure names the
    /// kernel, grid, block and arguments; in a profiled step it marks the
    /// launch's start and end.
    fn launch<A: KernelArgs>(
        &mut self,
        kernel: Kernel,
        grid: u32,
        args: &A,
    ) -> Result<(), TrainerError> {
        let start = match self.profile {
            Some(_) => Some(self.dev.mark()?),
            None => None,
        };
        let mut r = self.dev.launch(kernel, grid, args);
        if self.sync_launches && r.is_ok() {
            r = self.dev.sync();
        }
        if let Err(e) = r {
            if !self.sync_launches {
                return Err(e);
            }
            return Err(self.device_err(format!(
                "kernel {} (grid {grid}, block {BLOCK}) failed: {}; arguments {args:?}",
                kernel.name(),
                msg_of(e)
            )));
        }
        if let Some(start) = start {
            let end = self.dev.mark()?;
            if let Some(p) = &mut self.profile {
                p.push((kernel, start, end));
            }
        }
        Ok(())
    }

    /// Whether every launch is waited for and a failing one named (on by
    /// default when [`SYNC_ENV`] is `1`).
    pub fn set_sync_launches(&mut self, on: bool) {
        self.sync_launches = on;
    }

    /// Runs the single training step of `plan` with every launch timed on
    /// the device (CUDA events on a GPU; on the emulated device, which
    /// runs each launch before returning, the host clock).
    ///
    /// # Errors
    /// A plan of more than one step, or a device failure.
    pub fn profile_step(&mut self, plan: &EpochPlan<'_>) -> Result<StepProfile, TrainerError> {
        if plan.steps() != 1 {
            return Err(TrainerError::State(format!(
                "a profiled step needs a plan of one step, not {}",
                plan.steps()
            )));
        }
        self.profile = Some(Vec::new());
        let run = self.train_epoch(plan, &mut || {});
        let marks = self.profile.take().unwrap_or_default();
        let timed = run.and_then(|_| self.summarize(&marks));
        let cleared = self.dev.clear_marks();
        let profile = timed?;
        cleared?;
        Ok(profile)
    }

    /// Per-kernel totals of a profiled step's marks.
    fn summarize(&mut self, marks: &[(Kernel, Mark, Mark)]) -> Result<StepProfile, TrainerError> {
        let mut kernels: Vec<KernelTime> = Vec::new();
        for &(kernel, start, end) in marks {
            let ms = self.dev.elapsed_ms(start, end)?;
            match kernels.iter_mut().find(|k| k.kernel == kernel) {
                Some(k) => {
                    k.launches += 1;
                    k.ms += ms;
                }
                None => kernels.push(KernelTime {
                    kernel,
                    launches: 1,
                    ms,
                }),
            }
        }
        let step_ms = match (marks.first(), marks.last()) {
            (Some(first), Some(last)) => self.dev.elapsed_ms(first.1, last.2)?,
            _ => 0.0,
        };
        Ok(StepProfile {
            kernels,
            launches: marks.len(),
            step_ms,
        })
    }

    fn ensure_losses(&mut self, steps: usize) -> Result<(), TrainerError> {
        if steps > self.losses_cap {
            if self.losses != 0 {
                self.dev.free(self.losses)?;
            }
            self.losses = self.dev.alloc(steps * 4)?;
            self.losses_cap = steps;
        }
        Ok(())
    }

    /// Forward pass of `n` images from value buffer 0, in training
    /// (dropout applied) or inference (dropout skipped); returns the
    /// logits' buffer.
    fn forward_device(&mut self, n: usize, train: bool) -> Result<DevPtr, TrainerError> {
        let p = self.params;
        // Which buffer holds each value: its own, or in inference, for the
        // output of a dropout, the dropout's input.
        let mut at: Vec<usize> = (0..self.sched.vals.len()).collect();
        for st in self.sched.stages.clone() {
            let (inp, out) = (self.sched.vals[at[st.input]], self.sched.vals[st.output]);
            let (a, b) = (st.in_shape, st.out_shape);
            match st.op {
                Op::Conv { k, s, p: pad } => {
                    let args = ConvArgs {
                        x: inp.ptr,
                        w: ptr_at(p, st.w_off),
                        b: ptr_at(p, st.b_off),
                        y: out.ptr,
                        ..conv_dims(n, a, b, k, s, pad, st.act)
                    };
                    let kernel = conv_forward(n, a, b, k);
                    self.launch_blocks(kernel, conv_grid(kernel, n, a, b, k), &args)?;
                }
                Op::Pool { k, s, max } => {
                    let args = PoolArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        arg: out.arg,
                        ..pool_dims(n, a, b, k, s, max, 0)
                    };
                    self.launch_over(Kernel::PoolForward, n * b.len(), &args)?;
                }
                Op::Act => {
                    let args = ActArgs {
                        y: inp.ptr,
                        len: int(n * a.len()),
                        act: st.act,
                    };
                    self.launch_over(Kernel::ActivationForward, n * a.len(), &args)?;
                }
                Op::Linear => {
                    let args = LinearArgs {
                        x: inp.ptr,
                        w: ptr_at(p, st.w_off),
                        b: ptr_at(p, st.b_off),
                        y: out.ptr,
                        n: int(n),
                        f_in: int(a.len()),
                        f_out: int(b.len()),
                        act: st.act,
                        ..LinearArgs::default()
                    };
                    let [kernel, _, _] = linear_kernels(n, a.len(), b.len());
                    let grid = linear_grid(kernel, n, a.len(), b.len());
                    self.launch_blocks(kernel, grid, &args)?;
                }
                Op::Upsample => {
                    let args = UpsampleArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        ..upsample_dims(n, a, b, 0)
                    };
                    self.launch_over(Kernel::UpsampleForward, n * b.len(), &args)?;
                }
                Op::Dropout { p: prob, layer } => {
                    if !train {
                        at[st.output] = at[st.input];
                        continue;
                    }
                    let args = DropoutArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        ..self.dropout_dims(n * a.len(), prob, layer, 0)
                    };
                    self.launch_over(Kernel::DropoutForward, n * a.len(), &args)?;
                }
            }
        }
        let last = at[self.sched.vals.len() - 1];
        Ok(self.sched.vals[last].ptr)
    }

    /// The dimensions and mask of dropout layer `layer` (probability `p`)
    /// over `len` values at the current step.
    fn dropout_dims(&self, len: usize, p: f32, layer: u32, act: i32) -> DropoutArgs {
        DropoutArgs {
            seed: self.config.dropout_seed,
            step: self.step,
            layer,
            threshold: dropout::threshold(p),
            scale: dropout::scale(p),
            len: int(len),
            act,
            ..DropoutArgs::default()
        }
    }

    /// Loss, backward pass and optimizer step for `n` images whose inputs
    /// and labels are on the device; the batch loss goes to slot `slot`.
    fn train_device(&mut self, n: usize, slot: usize) -> Result<(), TrainerError> {
        self.forward_device(n, true)?;
        let last = self.sched.vals[self.sched.vals.len() - 1];
        let loss = LossArgs {
            logits: last.ptr,
            labels: self.labels,
            dlogits: last.dptr,
            losses: self.losses,
            n: int(n),
            classes: int(CLASSES),
            slot: int(slot),
            scale: 1.0 / n as f32,
        };
        self.launch(Kernel::SoftmaxCrossEntropy, 1, &loss)?;
        let (p, g) = (self.params, self.grads);
        let act = act_code(self.config.act);
        for st in self.sched.stages.clone().iter().rev() {
            let (inp, out) = (self.sched.vals[st.input], self.sched.vals[st.output]);
            let (a, b) = (st.in_shape, st.out_shape);
            let in_act = if inp.holds_act { act } else { 0 };
            match st.op {
                Op::Conv { k, s, p: pad } => {
                    let dims = conv_dims(n, a, b, k, s, pad, in_act);
                    let wargs = ConvArgs {
                        x: inp.ptr,
                        dy: out.dptr,
                        dw: ptr_at(g, st.w_off),
                        db: ptr_at(g, st.b_off),
                        ..dims
                    };
                    let kernel = conv_backward_weight(n, a, b, k);
                    if let Some(tile) = kernel_tile(kernel) {
                        let args = ConvArgs {
                            y: self.workspace,
                            splits: int(wgrad_splits(tile, b.c, a.c * k * k)),
                            ..wargs
                        };
                        for kernel in [kernel, Kernel::Conv2dBackwardWeightReduce] {
                            self.launch_blocks(kernel, conv_grid(kernel, n, a, b, k), &args)?;
                        }
                    } else {
                        self.launch_blocks(kernel, conv_grid(kernel, n, a, b, k), &wargs)?;
                    }
                    if inp.needs_grad {
                        let iargs = ConvArgs {
                            x: inp.ptr,
                            w: ptr_at(p, st.w_off),
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..dims
                        };
                        let kernel = conv_backward_input(n, a, b, k, s);
                        self.launch_blocks(kernel, conv_grid(kernel, n, a, b, k), &iargs)?;
                    }
                }
                Op::Pool { k, s, max } => {
                    if inp.needs_grad {
                        let args = PoolArgs {
                            x: inp.ptr,
                            arg: out.arg,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..pool_dims(n, a, b, k, s, max, in_act)
                        };
                        self.launch_over(Kernel::PoolBackward, n * a.len(), &args)?;
                    }
                }
                Op::Act => {}
                Op::Upsample => {
                    if inp.needs_grad {
                        let args = UpsampleArgs {
                            x: inp.ptr,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..upsample_dims(n, a, b, in_act)
                        };
                        self.launch_over(Kernel::UpsampleBackward, n * a.len(), &args)?;
                    }
                }
                Op::Dropout { p: prob, layer } => {
                    if inp.needs_grad {
                        let args = DropoutArgs {
                            x: inp.ptr,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..self.dropout_dims(n * a.len(), prob, layer, in_act)
                        };
                        self.launch_over(Kernel::DropoutBackward, n * a.len(), &args)?;
                    }
                }
                Op::Linear => {
                    let dims = LinearArgs {
                        n: int(n),
                        f_in: int(a.len()),
                        f_out: int(b.len()),
                        act: in_act,
                        ..LinearArgs::default()
                    };
                    let wargs = LinearArgs {
                        x: inp.ptr,
                        dy: out.dptr,
                        dw: ptr_at(g, st.w_off),
                        db: ptr_at(g, st.b_off),
                        ..dims
                    };
                    let [_, ikernel, wkernel] = linear_kernels(n, a.len(), b.len());
                    let grid = linear_grid(wkernel, n, a.len(), b.len());
                    self.launch_blocks(wkernel, grid, &wargs)?;
                    if inp.needs_grad {
                        let iargs = LinearArgs {
                            x: inp.ptr,
                            w: ptr_at(p, st.w_off),
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..dims
                        };
                        let grid = linear_grid(ikernel, n, a.len(), b.len());
                        self.launch_blocks(ikernel, grid, &iargs)?;
                    }
                }
            }
        }
        self.update()
    }

    /// One optimizer step over all parameters (lenet-core's formulas).
    fn update(&mut self) -> Result<(), TrainerError> {
        self.step += 1;
        let len = self.sched.params;
        match self.config.optimizer {
            OptimizerConfig::Adam { .. } => {
                let mut opt = core_adam(self.config.optimizer);
                opt.lr = self.lr;
                let k = opt.scalars(self.step);
                let args = AdamArgs {
                    p: self.params,
                    g: self.grads,
                    m: self.m,
                    v: self.v,
                    len: int(len),
                    step_size: k.step_size,
                    bc2_sqrt: k.bc2_sqrt,
                    w1: k.w1,
                    w2: k.w2,
                    beta2: k.beta2,
                    eps: k.eps,
                    weight_decay: k.weight_decay,
                };
                self.launch_over(Kernel::AdamUpdate, len, &args)
            }
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                ..
            } => {
                if momentum != 0.0 {
                    self.sgd_has_m = true;
                }
                let args = SgdArgs {
                    p: self.params,
                    g: self.grads,
                    buf: self.m,
                    len: int(len),
                    lr: self.lr,
                    momentum,
                    weight_decay,
                    first: i32::from(self.step == 1),
                    pad_: 0,
                };
                self.launch_over(Kernel::SgdUpdate, len, &args)
            }
        }
    }

    /// Puts `plan.data` on the device unless it is there already.
    fn ensure_set(&mut self, plan: &EpochPlan<'_>) -> Result<(), TrainerError> {
        let (images, labels) = (&plan.data.images, &plan.data.labels);
        let key = (
            images.len() + labels.len(),
            digest(images) ^ digest(labels).rotate_left(32),
        );
        if self.set.as_ref().is_some_and(|s| s.key == key) {
            return Ok(());
        }
        let released = self.set.as_ref().map_or(0, |s| s.key.0);
        if let Some(free) = self.dev.free_memory()?
            && key.0 > free.saturating_add(released)
        {
            return Err(self.device_err(format!(
                "the training set needs {}, but the device has {} free",
                mib(key.0),
                mib(free)
            )));
        }
        if let Some(old) = self.set.take() {
            self.dev.free(old.images)?;
            self.dev.free(old.labels)?;
        }
        let images = self.dev.alloc(plan.data.images.len())?;
        let labels = match self.dev.alloc(plan.data.labels.len()) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.dev.free(images);
                return Err(e);
            }
        };
        let up = self
            .dev
            .upload(images, &plan.data.images)
            .and_then(|()| self.dev.upload(labels, &plan.data.labels));
        if let Err(e) = up {
            let _ = self.dev.free(images);
            let _ = self.dev.free(labels);
            return Err(e);
        }
        self.set = Some(DeviceSet {
            key,
            images,
            labels,
        });
        Ok(())
    }
}

fn conv_dims(n: usize, a: Shape3, b: Shape3, k: usize, s: usize, p: usize, act: i32) -> ConvArgs {
    ConvArgs {
        n: int(n),
        c_in: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        c_out: int(b.c),
        oh: int(b.h),
        ow: int(b.w),
        k: int(k),
        s: int(s),
        p: int(p),
        act,
        ..ConvArgs::default()
    }
}

fn upsample_dims(n: usize, a: Shape3, b: Shape3, act: i32) -> UpsampleArgs {
    UpsampleArgs {
        n: int(n),
        c: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        oh: int(b.h),
        ow: int(b.w),
        act,
        ..UpsampleArgs::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn pool_dims(n: usize, a: Shape3, b: Shape3, k: usize, s: usize, max: bool, act: i32) -> PoolArgs {
    PoolArgs {
        n: int(n),
        c: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        oh: int(b.h),
        ow: int(b.w),
        k: int(k),
        s: int(s),
        max: i32::from(max),
        act,
        ..PoolArgs::default()
    }
}

impl<D: Device> Trainer for GpuTrainer<D> {
    fn device_name(&self) -> &'static str {
        self.dev.kind()
    }

    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError> {
        let n = labels.len();
        if x.len() != n * INPUT_SHAPE.len() {
            return Err(TrainerError::State(format!(
                "{} input values for {n} images",
                x.len()
            )));
        }
        if n == 0 {
            return Ok(0.0);
        }
        self.ensure_capacity(n, true)?;
        self.ensure_losses(1)?;
        let input = self.sched.vals[0].ptr;
        self.dev.upload_slice(input, x)?;
        let l: Vec<i32> = labels.iter().map(|&l| i32::from(l)).collect();
        self.dev.upload_slice(self.labels, &l)?;
        self.train_device(n, 0)?;
        let mut loss = [0.0f32];
        self.dev.download_slice(&mut loss, self.losses)?;
        Ok(loss[0])
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = logits.len() / CLASSES;
        if x.len() != n * INPUT_SHAPE.len() || logits.len() != n * CLASSES {
            return Err(TrainerError::State(format!(
                "{} input values and {} logits do not make whole images",
                x.len(),
                logits.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        // In chunks no larger than the buffers training made (inference
        // needs no gradients): evaluating 10,000 images must not grow
        // every buffer to 10,000 images.
        let chunk = if self.cap > 0 {
            self.cap
        } else {
            n.min(INFERENCE_CHUNK)
        };
        self.ensure_capacity(chunk, false)?;
        let per = INPUT_SHAPE.len();
        for (x, logits) in x
            .chunks(chunk * per)
            .zip(logits.chunks_mut(chunk * CLASSES))
        {
            let input = self.sched.vals[0].ptr;
            self.dev.upload_slice(input, x)?;
            let last = self.forward_device(logits.len() / CLASSES, false)?;
            self.dev.download_slice(logits, last)?;
        }
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn params(&mut self) -> Result<Vec<f32>, TrainerError> {
        let mut p = vec![0.0; self.sched.params];
        self.dev.download_slice(&mut p, self.params)?;
        Ok(p)
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError> {
        let n = self.sched.params;
        let mut m = vec![0.0; n];
        let mut v = vec![0.0; n];
        match self.config.optimizer {
            OptimizerConfig::Adam { .. } => {
                self.dev.download_slice(&mut m, self.m)?;
                self.dev.download_slice(&mut v, self.v)?;
            }
            OptimizerConfig::Sgd { .. } => {
                if self.sgd_has_m {
                    self.dev.download_slice(&mut m, self.m)?;
                } else {
                    m.clear();
                }
                v.clear();
            }
        }
        Ok(OptimizerState {
            step: self.step,
            m,
            v,
        })
    }

    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        let n = self.sched.params;
        check_state(n, params, state)?;
        self.dev.upload_slice(self.params, params)?;
        let zeros = vec![0.0f32; n];
        let m = if state.m.is_empty() { &zeros } else { &state.m };
        let v = if state.v.is_empty() { &zeros } else { &state.v };
        self.dev.upload_slice(self.m, m)?;
        self.dev.upload_slice(self.v, v)?;
        self.sgd_has_m = !state.m.is_empty();
        self.step = state.step;
        Ok(())
    }

    fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<f32>, TrainerError> {
        let steps = plan.steps();
        if steps == 0 {
            return Ok(Vec::new());
        }
        self.ensure_set(plan)?;
        self.ensure_capacity(plan.batch_size.min(plan.order.len()), true)?;
        self.ensure_losses(steps)?;
        let len = plan.order.len();
        if len > self.order_cap {
            for p in [self.order, self.aug] {
                if p != 0 {
                    self.dev.free(p)?;
                }
            }
            self.order = self.dev.alloc(len * 4)?;
            self.aug = self.dev.alloc(len * 3)?;
            self.order_cap = len;
        }
        self.dev.upload_slice(self.order, &plan.order)?;
        let aug = match &plan.aug {
            Some(a) => {
                let flat: Vec<i8> = a.iter().flat_map(|g| [g.flip, g.dy, g.dx]).collect();
                self.dev.upload_slice(self.aug, &flat)?;
                self.aug
            }
            None => 0,
        };
        let set = self.set.as_ref().map(|s| (s.images, s.labels));
        let (images, labels) = set.ok_or_else(|| self.device_err("no training set".into()))?;
        for b in 0..steps {
            let first = b * plan.batch_size;
            let n = (len - first).min(plan.batch_size);
            let g = GatherArgs {
                images,
                labels,
                order: self.order,
                aug,
                x: self.sched.vals[0].ptr,
                y: self.labels,
                first: int(first),
                n: int(n),
                mean: plan.norm.mean,
                std: plan.norm.std,
            };
            self.launch_over(Kernel::GatherBatch, n * INPUT_SHAPE.len(), &g)?;
            self.lr = plan.lrs[b];
            self.train_device(n, b)?;
            progress();
        }
        let mut losses = vec![0.0f32; steps];
        self.dev.download_slice(&mut losses, self.losses)?;
        Ok(losses)
    }
}

/// The network's parameter count as the schedule sees it (equal to
/// [`Arch::num_params`]).
///
/// # Errors
/// A network the kernels cannot run.
pub fn schedule_params(arch: Arch) -> Result<usize, TrainerError> {
    Ok(Schedule::new(arch, 1)?.params)
}

/// Kernel launches of one training step of the network (what
/// [`GpuTrainer::launches_per_step`] says, without a device).
///
/// # Errors
/// A network the kernels cannot run.
pub fn schedule_launches(arch: Arch) -> Result<usize, TrainerError> {
    Ok(Schedule::new(arch, 1)?.launches_per_step())
}
