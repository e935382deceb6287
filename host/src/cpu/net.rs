//! One block of `L` images through LeNet-5, forward and backward, on the
//! lane kernels of [`super::kernels`], and the per-thread worker that runs a
//! contiguous chunk of a batch block by block.
//!
//! Geometry (const parameters of every type here):
//!
//! | model     | `XN` (padded input) | `C1` | `P1` | `C2` | `P2` | `FL` | pool |
//! |-----------|------|----|----|----|---|-----|-----|
//! | LeNet5    | 32   | 28 | 14 | 10 | 5 | 400 | avg |
//! | LeNet5Max | 28   | 24 | 12 | 8  | 4 | 256 | max |
//!
//! Per block the worker keeps every activation the backward pass needs
//! (about 36 KiB per image, so a block of 16 stays in L2). Convolution
//! gradients accumulate per lane over the chunk and are summed over the
//! lanes once at the end; the fully connected weight gradients are one
//! GEMM per layer over the whole chunk (`matrixmultiply`), from activations
//! and output gradients the blocks copy out in row layout.

use super::kernels::{
    V, bias_grad, conv_dw, conv_dx, conv_fwd, linear_dx, linear_fwd, pool2_act_bwd, pool2_fwd,
    softmax_xent,
};
use super::simd::{Act, Isa, Portable, Simd};
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// Pixels of one input image (`1 x 28 x 28`).
pub(crate) const IMG: usize = 28 * 28;
/// Output classes.
pub(crate) const CLASSES: usize = 10;

/// Offsets of the tensors in the flat parameter vector (PyTorch
/// `state_dict` order) for a flatten width `fl`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub c1w: usize,
    pub c1b: usize,
    pub c2w: usize,
    pub c2b: usize,
    pub f1w: usize,
    pub f1b: usize,
    pub f2w: usize,
    pub f2b: usize,
    pub f3w: usize,
    pub f3b: usize,
    pub total: usize,
}

impl Layout {
    /// The layout for flatten width `fl` (400 or 256).
    pub(crate) const fn new(fl: usize) -> Layout {
        let c1w = 0;
        let c1b = c1w + 6 * 25;
        let c2w = c1b + 6;
        let c2b = c2w + 16 * 6 * 25;
        let f1w = c2b + 16;
        let f1b = f1w + 120 * fl;
        let f2w = f1b + 120;
        let f2b = f2w + 84 * 120;
        let f3w = f2b + 84;
        let f3b = f3w + 10 * 84;
        let total = f3b + 10;
        Layout {
            c1w,
            c1b,
            c2w,
            c2b,
            f1w,
            f1b,
            f2w,
            f2b,
            f3w,
            f3b,
            total,
        }
    }
}

/// Convolution weights rearranged for the lane kernels, rebuilt from the
/// flat parameters before each step.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    /// conv1 weight as `(CI=1, K, K, CO=6)`.
    wt1: [[[[f32; 6]; 5]; 5]; 1],
    b1: [f32; 6],
    /// conv1 weight as `(K, K, 16)`, output channels zero-padded to 16.
    pub(crate) wt1p: [[[f32; 16]; 5]; 5],
    /// conv1 bias zero-padded to 16.
    pub(crate) b1p: [f32; 16],
    /// conv2 weight as `(CI=6, K, K, CO=16)` for the forward pass.
    pub(crate) wt2: [[[[f32; 16]; 5]; 5]; 6],
    pub(crate) b2: [f32; 16],
    /// conv2 weight as `(CO=16, K, K, CI=6)` for the input gradient.
    wd2: [[[[f32; 6]; 5]; 5]; 16],
}

impl Prepared {
    pub(crate) const fn new() -> Prepared {
        Prepared {
            wt1: [[[[0.0; 6]; 5]; 5]; 1],
            b1: [0.0; 6],
            wt1p: [[[0.0; 16]; 5]; 5],
            b1p: [0.0; 16],
            wt2: [[[[0.0; 16]; 5]; 5]; 6],
            b2: [0.0; 16],
            wd2: [[[[0.0; 6]; 5]; 5]; 16],
        }
    }

    /// Rearranges the convolution tensors of `params` (any layout: the
    /// convolutions come first and are the same in both models).
    pub(crate) fn update(&mut self, params: &[f32]) {
        let lay = Layout::new(0);
        let w1 = &params[lay.c1w..lay.c1b];
        let w2 = &params[lay.c2w..lay.c2b];
        for co in 0..6 {
            for t in 0..25 {
                self.wt1[0][t / 5][t % 5][co] = w1[co * 25 + t];
                self.wt1p[t / 5][t % 5][co] = w1[co * 25 + t];
            }
        }
        self.b1.copy_from_slice(&params[lay.c1b..lay.c2w]);
        self.b1p[..6].copy_from_slice(&self.b1);
        for co in 0..16 {
            for ci in 0..6 {
                for t in 0..25 {
                    let w = w2[(co * 6 + ci) * 25 + t];
                    self.wt2[ci][t / 5][t % 5][co] = w;
                    self.wd2[co][t / 5][t % 5][ci] = w;
                }
            }
        }
        self.b2.copy_from_slice(&params[lay.c2b..lay.f1w]);
    }
}

/// `&[f32]` as `&[[f32; C]; R]` (panics on a length mismatch).
fn mat<const R: usize, const C: usize>(s: &[f32]) -> &[[f32; C]; R] {
    let (rows, rest) = s.as_chunks::<C>();
    assert!(rest.is_empty());
    rows.try_into().expect("matrix size")
}

/// Activations and gradients of one block of `L` images, plus the lane
/// accumulators of the convolution gradients.
pub(crate) struct Work<
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
> {
    x: [[[V<L>; XN]; XN]; 1],       // (1, XN, XN, L) zero-padded input
    a1: [[[V<L>; C1]; C1]; 6],      // (6, C1, C1, L) conv1 activation
    p1: [[[V<L>; P1]; P1]; 6],      // (6, P1, P1, L) pool1
    a2: [[[V<L>; C2]; C2]; 16],     // (16, C2, C2, L) conv2 activation
    p2: [[[V<L>; P2]; P2]; 16],     // (16, P2, P2, L) pool2 = flatten (FL, L)
    h1: [V<L>; 120],                // (120, L)
    h2: [V<L>; 84],                 // (84, L)
    z3: [V<L>; CLASSES],            // (10, L) logits
    dz3: [V<L>; CLASSES],           // (10, L)
    dz2: [V<L>; 84],                // (84, L) grad of fc2 pre-activation
    dz1: [V<L>; 120],               // (120, L) grad of fc1 pre-activation
    dp2: [[[V<L>; P2]; P2]; 16],    // (16, P2, P2, L)
    dzc2: [[[V<L>; C2]; C2]; 16],   // (16, C2, C2, L) grad of conv2 pre-activation
    dp1: [[[V<L>; P1]; P1]; 6],     // (6, P1, P1, L)
    dzc1: [[[V<L>; C1]; C1]; 6],    // (6, C1, C1, L) grad of conv1 pre-activation
    gw1: [[[[V<L>; 5]; 5]; 1]; 6],  // (6, 1, 5, 5, L)
    gb1: [V<L>; 6],                 // (6, L)
    gw2: [[[[V<L>; 5]; 5]; 6]; 16], // (16, 6, 5, 5, L)
    gb2: [V<L>; 16],                // (16, L)
}

impl<
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
> Work<L, XN, C1, P1, C2, P2, FL>
{
    /// A zeroed workspace on the heap (it is hundreds of KiB).
    fn boxed() -> Box<Self> {
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: `Work` is not zero-sized and holds only (nested arrays
        // of) `f32`, for which the all-zero bit pattern is a valid value
        // (0.0); the pointer comes from the global allocator with the
        // layout of `Self`, as `Box::from_raw` requires.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<Self>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        }
    }
}

/// Fully connected tensors of the flat parameters, typed.
struct Fc<'a, const FL: usize> {
    w1: &'a [[f32; FL]; 120],
    b1: &'a [f32; 120],
    w2: &'a [[f32; 120]; 84],
    b2: &'a [f32; 84],
    w3: &'a [[f32; 84]; CLASSES],
    b3: &'a [f32; CLASSES],
}

impl<'a, const FL: usize> Fc<'a, FL> {
    fn new(params: &'a [f32]) -> Self {
        let l = Layout::new(FL);
        assert_eq!(params.len(), l.total);
        Fc {
            w1: mat(&params[l.f1w..l.f1b]),
            b1: params[l.f1b..l.f2w].try_into().expect("fc1 bias"),
            w2: mat(&params[l.f2w..l.f2b]),
            b2: params[l.f2b..l.f3w].try_into().expect("fc2 bias"),
            w3: mat(&params[l.f3w..l.f3b]),
            b3: params[l.f3b..].try_into().expect("fc3 bias"),
        }
    }
}

/// Forward pass of one block: `imgs` holds `valid <= L` images (`valid x
/// 784`); the other lanes run on zeros. Leaves the logits in `w.z3`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block<
    S: Simd,
    A: Act,
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL>,
    prep: &Prepared,
    fc: &Fc<'_, FL>,
    imgs: &[f32],
) {
    const { assert!(FL == 16 * P2 * P2 && XN >= 28 && (XN - 28).is_multiple_of(2)) }
    let pad = (XN - 28) / 2;
    let valid = imgs.len() / IMG;
    for y in 0..28 {
        let row = &mut w.x[0][y + pad][pad..pad + 28];
        for (xx, px) in row.iter_mut().enumerate() {
            for l in 0..L {
                px[l] = if l < valid {
                    imgs[l * IMG + y * 28 + xx]
                } else {
                    0.0
                };
            }
        }
    }
    conv_fwd::<S, A, L, 1, 6, 5, XN, XN, C1, C1>(&mut w.a1, &w.x, &prep.wt1, &prep.b1);
    pool2_fwd::<S, L, MAX, 6, C1, C1, P1, P1>(&mut w.p1, &w.a1);
    conv_fwd::<S, A, L, 6, 16, 5, P1, P1, C2, C2>(&mut w.a2, &w.p1, &prep.wt2, &prep.b2);
    pool2_fwd::<S, L, MAX, 16, C2, C2, P2, P2>(&mut w.p2, &w.a2);
    let f: &[V<L>; FL] =
        w.p2.as_flattened()
            .as_flattened()
            .try_into()
            .expect("flatten");
    linear_fwd::<S, A, L, 12, FL, 120>(&mut w.h1, f, fc.w1, fc.b1, true);
    linear_fwd::<S, A, L, 12, 120, 84>(&mut w.h2, &w.h1, fc.w2, fc.b2, true);
    linear_fwd::<S, A, L, 10, 84, CLASSES>(&mut w.z3, &w.h2, fc.w3, fc.b3, false);
}

/// Copies lane-layout `(N, L)` into rows `(valid, N)` at `rows[r0..]`.
#[inline(always)]
fn to_rows<const L: usize, const N: usize>(rows: &mut [f32], src: &[V<L>; N], valid: usize) {
    for l in 0..valid {
        let row = &mut rows[l * N..(l + 1) * N];
        for (d, s) in row.iter_mut().zip(src) {
            *d = s[l];
        }
    }
}

/// Row-layout copies of the fully connected layers' inputs and output
/// gradients over a chunk (`rows x width`), for the weight-gradient GEMMs.
#[derive(Default)]
struct Rows {
    x1: Vec<f32>, // (n, FL)
    d1: Vec<f32>, // (n, 120)
    x2: Vec<f32>, // (n, 120)
    d2: Vec<f32>, // (n, 84)
    x3: Vec<f32>, // (n, 84)
    d3: Vec<f32>, // (n, 10)
}

/// `c (m x n) = a^T b` where `a` is `(k, m)` and `b` is `(k, n)`, both row
/// major: the weight gradient `dW = dY^T X` over `k` images.
fn gemm_at_b(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(c.len() == m * n && a.len() >= k * m && b.len() >= k * n);
    // SAFETY: the asserts above bound every index the strides reach:
    // a[r * m + o] for r < k, o < m; b[r * n + i]; c[o * n + i].
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `db[o] = sum_r d[r][o]`, rows in order.
fn col_sums(db: &mut [f32], d: &[f32]) {
    db.fill(0.0);
    for row in d.chunks_exact(db.len()) {
        for (s, v) in db.iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// Sums the lanes of each accumulator, in lane order, into `out`.
fn lane_sums<const L: usize>(out: &mut [f32], acc: &[V<L>]) {
    for (o, a) in out.iter_mut().zip(acc) {
        let mut s = 0.0f32;
        for v in a {
            s += v;
        }
        *o = s;
    }
}

/// Forward and backward of one chunk of images: writes the chunk's summed
/// gradient (of `scale * sum of losses`) into `grads` and returns the
/// summed loss.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn train_chunk<
    S: Simd,
    A: Act,
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL>,
    rows: &mut Rows,
    prep: &Prepared,
    params: &[f32],
    x: &[f32],
    labels: &[u8],
    scale: f32,
    grads: &mut [f32],
) -> f64 {
    let fc = Fc::<FL>::new(params);
    let n = labels.len();
    assert_eq!(x.len(), n * IMG);
    for r in [
        (&mut rows.x1, FL),
        (&mut rows.d1, 120),
        (&mut rows.x2, 120),
        (&mut rows.d2, 84),
        (&mut rows.x3, 84),
        (&mut rows.d3, CLASSES),
    ] {
        if r.0.len() < n * r.1 {
            r.0.resize(n * r.1, 0.0);
        }
    }
    w.gw1 = [[[[[0.0; L]; 5]; 5]; 1]; 6];
    w.gb1 = [[0.0; L]; 6];
    w.gw2 = [[[[[0.0; L]; 5]; 5]; 6]; 16];
    w.gb2 = [[0.0; L]; 16];
    let mut loss = 0.0f64;
    for r0 in (0..n).step_by(L) {
        let valid = L.min(n - r0);
        forward_block::<S, A, L, XN, C1, P1, C2, P2, FL, MAX>(
            w,
            prep,
            &fc,
            &x[r0 * IMG..(r0 + valid) * IMG],
        );
        loss += softmax_xent::<S, L, CLASSES>(&mut w.dz3, &w.z3, &labels[r0..r0 + valid], scale);
        // Fully connected layers: keep rows for the weight GEMMs, push the
        // gradient down. dz = (W^T dy) * act'(y_prev).
        let f: &[V<L>; FL] =
            w.p2.as_flattened()
                .as_flattened()
                .try_into()
                .expect("flatten");
        to_rows::<L, FL>(&mut rows.x1[r0 * FL..], f, valid);
        to_rows::<L, 120>(&mut rows.x2[r0 * 120..], &w.h1, valid);
        to_rows::<L, 84>(&mut rows.x3[r0 * 84..], &w.h2, valid);
        to_rows::<L, CLASSES>(&mut rows.d3[r0 * CLASSES..], &w.dz3, valid);
        linear_dx::<S, A, L, 12, 84, CLASSES>(&mut w.dz2, &w.dz3, fc.w3, &w.h2, true);
        to_rows::<L, 84>(&mut rows.d2[r0 * 84..], &w.dz2, valid);
        linear_dx::<S, A, L, 12, 120, 84>(&mut w.dz1, &w.dz2, fc.w2, &w.h1, true);
        to_rows::<L, 120>(&mut rows.d1[r0 * 120..], &w.dz1, valid);
        {
            let dp2: &mut [V<L>; FL] = w
                .dp2
                .as_flattened_mut()
                .as_flattened_mut()
                .try_into()
                .expect("flatten");
            linear_dx::<S, A, L, 8, FL, 120>(dp2, &w.dz1, fc.w1, f, false);
        }
        // Convolutions.
        pool2_act_bwd::<S, A, L, MAX, 16, C2, C2, P2, P2>(&mut w.dzc2, &w.dp2, &w.a2, &w.p2);
        conv_dw::<S, L, 4, 6, 16, 5, P1, P1, C2, C2>(&mut w.gw2, &w.dzc2, &w.p1);
        bias_grad::<S, L, 16, C2, C2>(&mut w.gb2, &w.dzc2);
        conv_dx::<S, L, 6, 16, 5, P1, P1, C2, C2>(&mut w.dp1, &w.dzc2, &prep.wd2);
        pool2_act_bwd::<S, A, L, MAX, 6, C1, C1, P1, P1>(&mut w.dzc1, &w.dp1, &w.a1, &w.p1);
        conv_dw::<S, L, 3, 1, 6, 5, XN, XN, C1, C1>(&mut w.gw1, &w.dzc1, &w.x);
        bias_grad::<S, L, 6, C1, C1>(&mut w.gb1, &w.dzc1);
    }
    let lay = Layout::new(FL);
    assert_eq!(grads.len(), lay.total);
    lane_sums::<L>(
        &mut grads[lay.c1w..lay.c1b],
        w.gw1.as_flattened().as_flattened().as_flattened(),
    );
    lane_sums::<L>(&mut grads[lay.c1b..lay.c2w], &w.gb1);
    lane_sums::<L>(
        &mut grads[lay.c2w..lay.c2b],
        w.gw2.as_flattened().as_flattened().as_flattened(),
    );
    lane_sums::<L>(&mut grads[lay.c2b..lay.f1w], &w.gb2);
    gemm_at_b(&mut grads[lay.f1w..lay.f1b], &rows.d1, &rows.x1, 120, n, FL);
    col_sums(&mut grads[lay.f1b..lay.f2w], &rows.d1[..n * 120]);
    gemm_at_b(&mut grads[lay.f2w..lay.f2b], &rows.d2, &rows.x2, 84, n, 120);
    col_sums(&mut grads[lay.f2b..lay.f3w], &rows.d2[..n * 84]);
    gemm_at_b(
        &mut grads[lay.f3w..lay.f3b],
        &rows.d3,
        &rows.x3,
        CLASSES,
        n,
        84,
    );
    col_sums(&mut grads[lay.f3b..], &rows.d3[..n * CLASSES]);
    loss
}

/// Inference over a chunk: `logits` gets `n x 10`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_chunk<
    S: Simd,
    A: Act,
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL>,
    prep: &Prepared,
    params: &[f32],
    x: &[f32],
    logits: &mut [f32],
) {
    let fc = Fc::<FL>::new(params);
    let n = logits.len() / CLASSES;
    assert_eq!(x.len(), n * IMG);
    for r0 in (0..n).step_by(L) {
        let valid = L.min(n - r0);
        forward_block::<S, A, L, XN, C1, P1, C2, P2, FL, MAX>(
            w,
            prep,
            &fc,
            &x[r0 * IMG..(r0 + valid) * IMG],
        );
        to_rows::<L, CLASSES>(&mut logits[r0 * CLASSES..], &w.z3, valid);
    }
}

/// What the trainer drives on each thread: one chunk of a batch at a time.
pub(crate) trait Engine: Send {
    /// See [`train_chunk`].
    fn train(
        &mut self,
        prep: &Prepared,
        params: &[f32],
        x: &[f32],
        labels: &[u8],
        scale: f32,
        grads: &mut [f32],
    ) -> f64;
    /// See [`forward_chunk`].
    fn forward(&mut self, prep: &Prepared, params: &[f32], x: &[f32], logits: &mut [f32]);
    /// Low-latency forward pass of one image ([`super::single`]); returns
    /// false (and does nothing) where the instruction set has no such path.
    fn forward_one(
        &mut self,
        _prep: &Prepared,
        _params: &[f32],
        _img: &[f32],
        _logits: &mut [f32],
    ) -> bool {
        false
    }
}

/// Instruction-set marker types for [`Worker`].
pub(crate) mod isa {
    /// AVX-512F + FMA.
    pub(crate) struct Avx512;
    /// AVX2 + FMA.
    pub(crate) struct Avx2;
    /// Baseline.
    pub(crate) struct Generic;
}

/// A per-thread [`Engine`]: workspace for blocks of `L` images, compiled
/// for instruction set `I`, activation `A` and one model geometry.
pub(crate) struct Worker<
    I,
    A,
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
> {
    work: Box<Work<L, XN, C1, P1, C2, P2, FL>>,
    one: Box<super::single::One<XN, C1, P1, C2, P2, FL>>,
    rows: Rows,
    _m: core::marker::PhantomData<fn() -> (I, A)>,
}

macro_rules! engine_one {
    (none) => {};
    ($f:ident) => {
        fn forward_one(
            &mut self,
            prep: &Prepared,
            params: &[f32],
            img: &[f32],
            logits: &mut [f32],
        ) -> bool {
            // SAFETY: as in `train`.
            unsafe {
                $f::<A, XN, C1, P1, C2, P2, FL, MAX>(&mut self.one, prep, params, img, logits)
            };
            true
        }
    };
}

/// A `#[target_feature]` entry point of a single-image kernel of
/// [`super::single`] for one instruction set.
macro_rules! one_entry {
    ($(#[$doc:meta])* $name:ident, $feat:literal, $kernel:ident, $s:ty) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name<
            A: Act,
            const XN: usize,
            const C1: usize,
            const P1: usize,
            const C2: usize,
            const P2: usize,
            const FL: usize,
            const MAX: bool,
        >(
            w: &mut super::single::One<XN, C1, P1, C2, P2, FL>,
            prep: &Prepared,
            params: &[f32],
            img: &[f32],
            logits: &mut [f32],
        ) {
            super::single::$kernel::<$s, A, XN, C1, P1, C2, P2, FL, MAX>(
                w, prep, params, img, logits,
            )
        }
    };
}

one_entry!(
    /// The single-image path, compiled for AVX-512.
    one_avx512,
    "avx512f,avx512vl,avx2,fma",
    forward_one,
    Avx512
);
one_entry!(
    /// The single-image path, compiled for AVX2.
    one_avx2,
    "avx2,fma",
    forward_one8,
    Avx2
);

macro_rules! engine_impl {
    ($isa:ty, $s:ty, $train:ident, $fwd:ident, $one:tt $(, $feat:literal)?) => {
        $(#[target_feature(enable = $feat)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn $train<
            const L: usize,
            A: Act,
            const XN: usize,
            const C1: usize,
            const P1: usize,
            const C2: usize,
            const P2: usize,
            const FL: usize,
            const MAX: bool,
        >(
            w: &mut Work<L, XN, C1, P1, C2, P2, FL>,
            rows: &mut Rows,
            prep: &Prepared,
            params: &[f32],
            x: &[f32],
            labels: &[u8],
            scale: f32,
            grads: &mut [f32],
        ) -> f64 {
            train_chunk::<$s, A, L, XN, C1, P1, C2, P2, FL, MAX>(
                w, rows, prep, params, x, labels, scale, grads,
            )
        }

        $(#[target_feature(enable = $feat)])?
        unsafe fn $fwd<
            const L: usize,
            A: Act,
            const XN: usize,
            const C1: usize,
            const P1: usize,
            const C2: usize,
            const P2: usize,
            const FL: usize,
            const MAX: bool,
        >(
            w: &mut Work<L, XN, C1, P1, C2, P2, FL>,
            prep: &Prepared,
            params: &[f32],
            x: &[f32],
            logits: &mut [f32],
        ) {
            forward_chunk::<$s, A, L, XN, C1, P1, C2, P2, FL, MAX>(w, prep, params, x, logits)
        }

        impl<
            A: Act,
            const L: usize,
            const XN: usize,
            const C1: usize,
            const P1: usize,
            const C2: usize,
            const P2: usize,
            const FL: usize,
            const MAX: bool,
        > Engine for Worker<$isa, A, L, XN, C1, P1, C2, P2, FL, MAX>
        {
            fn train(
                &mut self,
                prep: &Prepared,
                params: &[f32],
                x: &[f32],
                labels: &[u8],
                scale: f32,
                grads: &mut [f32],
            ) -> f64 {
                // SAFETY: a `Worker` for this instruction set is only built
                // by `new_engine` after detecting it (`Isa::detect`).
                unsafe {
                    $train::<L, A, XN, C1, P1, C2, P2, FL, MAX>(
                        &mut self.work,
                        &mut self.rows,
                        prep,
                        params,
                        x,
                        labels,
                        scale,
                        grads,
                    )
                }
            }

            fn forward(&mut self, prep: &Prepared, params: &[f32], x: &[f32], logits: &mut [f32]) {
                // SAFETY: as in `train`.
                unsafe {
                    $fwd::<L, A, XN, C1, P1, C2, P2, FL, MAX>(&mut self.work, prep, params, x, logits)
                }
            }

            engine_one!($one);
        }
    };
}

#[cfg(target_arch = "x86_64")]
engine_impl!(
    isa::Avx512,
    Avx512,
    train_avx512,
    forward_avx512,
    one_avx512,
    "avx512f,avx512vl,avx2,fma"
);
#[cfg(target_arch = "x86_64")]
engine_impl!(
    isa::Avx2,
    Avx2,
    train_avx2,
    forward_avx2,
    one_avx2,
    "avx2,fma"
);
engine_impl!(isa::Generic, Portable, train_generic, forward_generic, none);

fn worker<
    I: 'static,
    A: Act,
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>() -> Box<dyn Engine>
where
    Worker<I, A, L, XN, C1, P1, C2, P2, FL, MAX>: Engine,
{
    Box::new(Worker::<I, A, L, XN, C1, P1, C2, P2, FL, MAX> {
        work: Work::boxed(),
        one: super::single::One::boxed(),
        rows: Rows::default(),
        _m: core::marker::PhantomData,
    })
}

fn with_model<I: 'static, A: Act, const L: usize>(max: bool) -> Box<dyn Engine>
where
    Worker<I, A, L, 32, 28, 14, 10, 5, 400, false>: Engine,
    Worker<I, A, L, 28, 24, 12, 8, 4, 256, true>: Engine,
{
    if max {
        worker::<I, A, L, 28, 24, 12, 8, 4, 256, true>()
    } else {
        worker::<I, A, L, 32, 28, 14, 10, 5, 400, false>()
    }
}

fn with_act<I: 'static, const L: usize>(
    act: lenet_core::activation::Activation,
    max: bool,
) -> Box<dyn Engine>
where
    Worker<I, super::simd::Sigmoid, L, 32, 28, 14, 10, 5, 400, false>: Engine,
    Worker<I, super::simd::Sigmoid, L, 28, 24, 12, 8, 4, 256, true>: Engine,
    Worker<I, super::simd::Relu, L, 32, 28, 14, 10, 5, 400, false>: Engine,
    Worker<I, super::simd::Relu, L, 28, 24, 12, 8, 4, 256, true>: Engine,
    Worker<I, super::simd::Tanh, L, 32, 28, 14, 10, 5, 400, false>: Engine,
    Worker<I, super::simd::Tanh, L, 28, 24, 12, 8, 4, 256, true>: Engine,
{
    use lenet_core::activation::Activation as Ac;
    match act {
        Ac::Sigmoid => with_model::<I, super::simd::Sigmoid, L>(max),
        Ac::Relu => with_model::<I, super::simd::Relu, L>(max),
        Ac::Tanh => with_model::<I, super::simd::Tanh, L>(max),
    }
}

/// A batched engine (blocks of `set.lanes()` images) for one model.
pub(crate) fn new_engine(
    set: Isa,
    act: lenet_core::activation::Activation,
    max: bool,
) -> Box<dyn Engine> {
    match set {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => with_act::<isa::Avx512, 16>(act, max),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => with_act::<isa::Avx2, 8>(act, max),
        _ => with_act::<isa::Generic, 4>(act, max),
    }
}
