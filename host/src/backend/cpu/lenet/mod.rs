//! The fused LeNet path of the CPU trainer ([`super::CpuTrainer`]), chosen
//! when a network's layer list is one of the three LeNets': one block of
//! `L` images through the whole network, forward and backward, on the lane
//! kernels of [`kernels`], and the per-thread worker that runs a contiguous
//! chunk of a batch block by block.
//!
//! Geometry (const parameters of every type here):
//!
//! | model      | `XN` (padded input) | `C1` | `P1` | `C2` | `P2` | `N1` | `N2` | `FL` | pool |
//! |------------|----|----|----|----|---|----|----|-----|-----|
//! | LeNet5     | 32 | 28 | 14 | 10 | 5 | 6  | 16 | 400 | avg |
//! | LeNet5Max  | 28 | 24 | 12 | 8  | 4 | 6  | 16 | 256 | max |
//! | LeNet5Wide | 28 | 24 | 12 | 8  | 4 | 16 | 32 | 512 | max |
//!
//! (`C*`/`P*` are the sides of the convolution and pooling outputs, `N1`
//! and `N2` the channels of the two convolutions.)
//!
//! Per block the worker keeps every activation the backward pass needs
//! (about 36 KiB per image, so a block of 16 stays in L2). Convolution
//! gradients accumulate per lane over the chunk and are summed over the
//! lanes once at the end; the fully connected weight gradients are one
//! GEMM per layer over the whole chunk (`matrixmultiply`), from activations
//! and output gradients the blocks copy out in row layout.

mod kernels;
pub(crate) mod simd;
mod single;

use kernels::{
    V, bias_grad, conv_dw, conv_dx, conv_fwd, linear_dx, linear_fwd, pool2_act_bwd, pool2_fwd,
    softmax_xent,
};
use lenet_core::model::ModelKind;
pub use simd::Isa;
use simd::{Act, Portable, Simd};
#[cfg(target_arch = "x86_64")]
use simd::{Avx2, Avx512};

/// Channels per register pass of a convolution wider than 8 (AVX2 and
/// baseline) or 16 (AVX-512) output channels (forward), or 8 input
/// channels (input gradient).
const CONV_CB: usize = 8;

/// Pixels of one input image (`1 x 28 x 28`).
pub(crate) const IMG: usize = 28 * 28;
/// Output classes.
pub(crate) const CLASSES: usize = 10;

/// Offsets of the tensors in the flat parameter vector (PyTorch
/// `state_dict` order).
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
    /// The layout for `n1` and `n2` convolution channels and flatten width
    /// `fl`.
    pub(crate) const fn new(n1: usize, n2: usize, fl: usize) -> Layout {
        let c1w = 0;
        let c1b = c1w + n1 * 25;
        let c2w = c1b + n1;
        let c2b = c2w + n2 * n1 * 25;
        let f1w = c2b + n2;
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

    /// The layout of `kind`.
    pub(crate) const fn of(kind: ModelKind) -> Layout {
        let (n1, n2) = kind.channels();
        Layout::new(n1, n2, kind.flat_features())
    }
}

/// Convolution weights rearranged for the lane kernels, rebuilt from the
/// flat parameters before each step; typed views come from the accessors.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    lay: Layout,
    n1: usize,
    n2: usize,
    /// conv1 weight as `(CI=1, K, K, N1)`.
    wt1: Vec<f32>,
    b1: Vec<f32>,
    /// conv1 weight as `(K, K, 16)`, output channels zero-padded to 16 (the
    /// single-image path of the 6/16-channel models).
    pub(crate) wt1p: [[[f32; 16]; 5]; 5],
    /// conv1 bias zero-padded to 16.
    pub(crate) b1p: [f32; 16],
    /// conv2 weight as `(CI=N1, K, K, CO=N2)` for the forward pass.
    wt2: Vec<f32>,
    b2: Vec<f32>,
    /// conv2 weight as `(CO=N2, K, K, CI=N1)` for the input gradient.
    wd2: Vec<f32>,
}

/// `&[f32]` as `&[[[[f32; D]; C]; B]; A]` (panics on a length mismatch).
fn cast4<const A: usize, const B: usize, const C: usize, const D: usize>(
    s: &[f32],
) -> &[[[[f32; D]; C]; B]; A] {
    let (d, r0) = s.as_chunks::<D>();
    let (c, r1) = d.as_chunks::<C>();
    let (b, r2) = c.as_chunks::<B>();
    assert!(r0.is_empty() && r1.is_empty() && r2.is_empty());
    b.try_into().expect("tensor size")
}

impl Prepared {
    pub(crate) fn new(kind: ModelKind) -> Prepared {
        let (n1, n2) = kind.channels();
        Prepared {
            lay: Layout::of(kind),
            n1,
            n2,
            wt1: vec![0.0; n1 * 25],
            b1: vec![0.0; n1],
            wt1p: [[[0.0; 16]; 5]; 5],
            b1p: [0.0; 16],
            wt2: vec![0.0; n1 * n2 * 25],
            b2: vec![0.0; n2],
            wd2: vec![0.0; n1 * n2 * 25],
        }
    }

    /// Rearranges the convolution tensors of `params`.
    pub(crate) fn update(&mut self, params: &[f32]) {
        let (lay, n1, n2) = (self.lay, self.n1, self.n2);
        assert_eq!(params.len(), lay.total);
        let w1 = &params[lay.c1w..lay.c1b];
        let w2 = &params[lay.c2w..lay.c2b];
        for co in 0..n1 {
            for t in 0..25 {
                self.wt1[t * n1 + co] = w1[co * 25 + t];
                if co < 16 {
                    self.wt1p[t / 5][t % 5][co] = w1[co * 25 + t];
                }
            }
        }
        self.b1.copy_from_slice(&params[lay.c1b..lay.c2w]);
        let m = n1.min(16);
        self.b1p[..m].copy_from_slice(&self.b1[..m]);
        for co in 0..n2 {
            for ci in 0..n1 {
                for t in 0..25 {
                    let w = w2[(co * n1 + ci) * 25 + t];
                    self.wt2[(ci * 25 + t) * n2 + co] = w;
                    self.wd2[(co * 25 + t) * n1 + ci] = w;
                }
            }
        }
        self.b2.copy_from_slice(&params[lay.c2b..lay.f1w]);
    }

    fn wt1<const N1: usize>(&self) -> &[[[[f32; N1]; 5]; 5]; 1] {
        cast4(&self.wt1)
    }

    fn b1<const N1: usize>(&self) -> &[f32; N1] {
        self.b1[..].try_into().expect("conv1 bias")
    }

    /// conv2 weight as `(CI=N1, K, K, CO=N2)`.
    pub(crate) fn wt2<const N1: usize, const N2: usize>(&self) -> &[[[[f32; N2]; 5]; 5]; N1] {
        cast4(&self.wt2)
    }

    /// conv2 bias.
    pub(crate) fn b2<const N2: usize>(&self) -> &[f32; N2] {
        self.b2[..].try_into().expect("conv2 bias")
    }

    fn wd2<const N1: usize, const N2: usize>(&self) -> &[[[[f32; N1]; 5]; 5]; N2] {
        cast4(&self.wd2)
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
    const N1: usize,
    const N2: usize,
> {
    x: [[[V<L>; XN]; XN]; 1],        // (1, XN, XN, L) zero-padded input
    a1: [[[V<L>; C1]; C1]; N1],      // (N1, C1, C1, L) conv1 activation
    p1: [[[V<L>; P1]; P1]; N1],      // (N1, P1, P1, L) pool1
    a2: [[[V<L>; C2]; C2]; N2],      // (N2, C2, C2, L) conv2 activation
    p2: [[[V<L>; P2]; P2]; N2],      // (N2, P2, P2, L) pool2 = flatten (FL, L)
    h1: [V<L>; 120],                 // (120, L)
    h2: [V<L>; 84],                  // (84, L)
    z3: [V<L>; CLASSES],             // (10, L) logits
    dz3: [V<L>; CLASSES],            // (10, L)
    dz2: [V<L>; 84],                 // (84, L) grad of fc2 pre-activation
    dz1: [V<L>; 120],                // (120, L) grad of fc1 pre-activation
    dp2: [[[V<L>; P2]; P2]; N2],     // (N2, P2, P2, L)
    dzc2: [[[V<L>; C2]; C2]; N2],    // (N2, C2, C2, L) grad of conv2 pre-activation
    dp1: [[[V<L>; P1]; P1]; N1],     // (N1, P1, P1, L)
    dzc1: [[[V<L>; C1]; C1]; N1],    // (N1, C1, C1, L) grad of conv1 pre-activation
    gw1: [[[[V<L>; 5]; 5]; 1]; N1],  // (N1, 1, 5, 5, L)
    gb1: [V<L>; N1],                 // (N1, L)
    gw2: [[[[V<L>; 5]; 5]; N1]; N2], // (N2, N1, 5, 5, L)
    gb2: [V<L>; N2],                 // (N2, L)
}

impl<
    const L: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const N1: usize,
    const N2: usize,
> Work<L, XN, C1, P1, C2, P2, FL, N1, N2>
{
    /// A zeroed workspace on the heap (it is hundreds of KiB).
    fn boxed() -> Box<Self> {
        // SAFETY: `Work` is not zero-sized and holds only (nested arrays
        // of) `f32`.
        unsafe { zeroed_box() }
    }
}

/// A heap value of `T` with every byte zero, without building it on the
/// stack first (the workspaces are hundreds of KiB).
///
/// # Safety
///
/// `T` must not be zero-sized, and the all-zero bit pattern must be a valid
/// `T` (true of nested arrays of `f32`: 0.0).
pub(crate) unsafe fn zeroed_box<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: the caller guarantees a non-zero size and that zeroed memory
    // is a valid `T`; the pointer comes from the global allocator with the
    // layout of `T`, as `Box::from_raw` requires.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<T>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
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
    fn new(params: &'a [f32], l: Layout) -> Self {
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

/// [`conv_fwd`] (5x5, square) with all `CO` output channels' accumulators
/// in registers where they fit beside an input and a broadcast weight (up
/// to 8 channels, or 16 with AVX-512's 32 registers), else [`CONV_CB`] per
/// pass.
#[inline(always)]
fn conv_fwd_fit<
    S: Simd,
    A: Act,
    const L: usize,
    const CI: usize,
    const CO: usize,
    const IN: usize,
    const ON: usize,
>(
    y: &mut [[[V<L>; ON]; ON]; CO],
    x: &[[[V<L>; IN]; IN]; CI],
    wt: &[[[[f32; CO]; 5]; 5]; CI],
    b: &[f32; CO],
) {
    if CO <= 8 || (S::LANES == 16 && CO <= 16) {
        conv_fwd::<S, A, L, CO, CI, CO, 5, IN, IN, ON, ON>(y, x, wt, b);
    } else {
        conv_fwd::<S, A, L, CONV_CB, CI, CO, 5, IN, IN, ON, ON>(y, x, wt, b);
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
    const N1: usize,
    const N2: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL, N1, N2>,
    prep: &Prepared,
    fc: &Fc<'_, FL>,
    imgs: &[f32],
) {
    const { assert!(FL == N2 * P2 * P2 && XN >= 28 && (XN - 28).is_multiple_of(2)) }
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
    conv_fwd_fit::<S, A, L, 1, N1, XN, C1>(&mut w.a1, &w.x, prep.wt1(), prep.b1());
    pool2_fwd::<S, L, MAX, N1, C1, C1, P1, P1>(&mut w.p1, &w.a1);
    conv_fwd_fit::<S, A, L, N1, N2, P1, C2>(&mut w.a2, &w.p1, prep.wt2(), prep.b2());
    pool2_fwd::<S, L, MAX, N2, C2, C2, P2, P2>(&mut w.p2, &w.a2);
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
    const N1: usize,
    const N2: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL, N1, N2>,
    rows: &mut Rows,
    prep: &Prepared,
    params: &[f32],
    x: &[f32],
    labels: &[u8],
    scale: f32,
    grads: &mut [f32],
) -> f64 {
    let fc = Fc::<FL>::new(params, Layout::new(N1, N2, FL));
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
    w.gw1 = [[[[[0.0; L]; 5]; 5]; 1]; N1];
    w.gb1 = [[0.0; L]; N1];
    w.gw2 = [[[[[0.0; L]; 5]; 5]; N1]; N2];
    w.gb2 = [[0.0; L]; N2];
    let mut loss = 0.0f64;
    for r0 in (0..n).step_by(L) {
        let valid = L.min(n - r0);
        forward_block::<S, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(
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
        pool2_act_bwd::<S, A, L, MAX, N2, C2, C2, P2, P2>(&mut w.dzc2, &w.dp2, &w.a2, &w.p2);
        // As for conv1 below: two channels' taps on AVX2, else four.
        if S::LANES == 8 {
            conv_dw::<S, L, 2, N1, N2, 5, P1, P1, C2, C2>(&mut w.gw2, &w.dzc2, &w.p1);
        } else {
            conv_dw::<S, L, 4, N1, N2, 5, P1, P1, C2, C2>(&mut w.gw2, &w.dzc2, &w.p1);
        }
        bias_grad::<S, L, N2, C2, C2>(&mut w.gb2, &w.dzc2);
        if N1 <= 8 {
            conv_dx::<S, L, N1, N1, N2, 5, P1, P1, C2, C2>(&mut w.dp1, &w.dzc2, prep.wd2());
        } else {
            conv_dx::<S, L, CONV_CB, N1, N2, 5, P1, P1, C2, C2>(&mut w.dp1, &w.dzc2, prep.wd2());
        }
        pool2_act_bwd::<S, A, L, MAX, N1, C1, C1, P1, P1>(&mut w.dzc1, &w.dp1, &w.a1, &w.p1);
        // Two channels' 5 taps in registers on AVX2 (16 registers); else
        // three channels where they divide N1 (6), else four.
        if S::LANES == 8 {
            conv_dw::<S, L, 2, 1, N1, 5, XN, XN, C1, C1>(&mut w.gw1, &w.dzc1, &w.x);
        } else if N1.is_multiple_of(3) {
            conv_dw::<S, L, 3, 1, N1, 5, XN, XN, C1, C1>(&mut w.gw1, &w.dzc1, &w.x);
        } else {
            conv_dw::<S, L, 4, 1, N1, 5, XN, XN, C1, C1>(&mut w.gw1, &w.dzc1, &w.x);
        }
        bias_grad::<S, L, N1, C1, C1>(&mut w.gb1, &w.dzc1);
    }
    let lay = Layout::new(N1, N2, FL);
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
    const N1: usize,
    const N2: usize,
    const MAX: bool,
>(
    w: &mut Work<L, XN, C1, P1, C2, P2, FL, N1, N2>,
    prep: &Prepared,
    params: &[f32],
    x: &[f32],
    logits: &mut [f32],
) {
    let fc = Fc::<FL>::new(params, Layout::new(N1, N2, FL));
    let n = logits.len() / CLASSES;
    assert_eq!(x.len(), n * IMG);
    for r0 in (0..n).step_by(L) {
        let valid = L.min(n - r0);
        forward_block::<S, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(
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
    /// Low-latency forward pass of one image ([`single`]); returns
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
/// for instruction set `I`, activation `A` and one model geometry, with
/// the model's single-image path where it has one.
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
    const N1: usize,
    const N2: usize,
    const MAX: bool,
> {
    work: Box<Work<L, XN, C1, P1, C2, P2, FL, N1, N2>>,
    one: Option<Box<dyn Single>>,
    rows: Rows,
    _m: core::marker::PhantomData<fn() -> (I, A)>,
}

/// The single-image path ([`single`]) of one 6/16-channel model on
/// one instruction set.
pub(crate) trait Single: Send {
    /// See [`Engine::forward_one`].
    fn forward_one(
        &mut self,
        prep: &Prepared,
        params: &[f32],
        img: &[f32],
        logits: &mut [f32],
    ) -> bool;
}

/// A [`Single`] for instruction set `I`, activation `A` and one geometry.
pub(crate) struct OneWorker<
    I,
    A,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
> {
    one: Box<single::One<XN, C1, P1, C2, P2, FL>>,
    _m: core::marker::PhantomData<fn() -> (I, A)>,
}

/// A `#[target_feature]` entry point of a single-image kernel of
/// [`single`] for one instruction set, and the [`Single`] impl of
/// that set that calls it.
macro_rules! one_entry {
    ($(#[$doc:meta])* $name:ident, $isa:ty, $feat:literal, $kernel:ident, $s:ty) => {
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
            w: &mut single::One<XN, C1, P1, C2, P2, FL>,
            prep: &Prepared,
            params: &[f32],
            img: &[f32],
            logits: &mut [f32],
        ) {
            single::$kernel::<$s, A, XN, C1, P1, C2, P2, FL, MAX>(
                w, prep, params, img, logits,
            )
        }

        #[cfg(target_arch = "x86_64")]
        impl<
            A: Act,
            const XN: usize,
            const C1: usize,
            const P1: usize,
            const C2: usize,
            const P2: usize,
            const FL: usize,
            const MAX: bool,
        > Single for OneWorker<$isa, A, XN, C1, P1, C2, P2, FL, MAX>
        {
            fn forward_one(
                &mut self,
                prep: &Prepared,
                params: &[f32],
                img: &[f32],
                logits: &mut [f32],
            ) -> bool {
                // SAFETY: as in `Engine::train` of `Worker`: built only
                // after detecting the instruction set.
                unsafe { $name::<A, XN, C1, P1, C2, P2, FL, MAX>(&mut self.one, prep, params, img, logits) };
                true
            }
        }
    };
}

one_entry!(
    /// The single-image path, compiled for AVX-512.
    one_avx512,
    isa::Avx512,
    "avx512f,avx512vl,avx2,fma",
    forward_one,
    Avx512
);
one_entry!(
    /// The single-image path, compiled for AVX2.
    one_avx2,
    isa::Avx2,
    "avx2,fma",
    forward_one8,
    Avx2
);

/// The baseline has no single-image path: single images run as a block.
impl<
    A: Act,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
> Single for OneWorker<isa::Generic, A, XN, C1, P1, C2, P2, FL, MAX>
{
    fn forward_one(&mut self, _: &Prepared, _: &[f32], _: &[f32], _: &mut [f32]) -> bool {
        false
    }
}

macro_rules! engine_impl {
    ($isa:ty, $s:ty, $train:ident, $fwd:ident $(, $feat:literal)?) => {
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
            const N1: usize,
            const N2: usize,
            const MAX: bool,
        >(
            w: &mut Work<L, XN, C1, P1, C2, P2, FL, N1, N2>,
            rows: &mut Rows,
            prep: &Prepared,
            params: &[f32],
            x: &[f32],
            labels: &[u8],
            scale: f32,
            grads: &mut [f32],
        ) -> f64 {
            train_chunk::<$s, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(
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
            const N1: usize,
            const N2: usize,
            const MAX: bool,
        >(
            w: &mut Work<L, XN, C1, P1, C2, P2, FL, N1, N2>,
            prep: &Prepared,
            params: &[f32],
            x: &[f32],
            logits: &mut [f32],
        ) {
            forward_chunk::<$s, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(w, prep, params, x, logits)
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
            const N1: usize,
            const N2: usize,
            const MAX: bool,
        > Engine for Worker<$isa, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>
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
                    $train::<L, A, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(
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
                    $fwd::<L, A, XN, C1, P1, C2, P2, FL, N1, N2, MAX>(&mut self.work, prep, params, x, logits)
                }
            }

            fn forward_one(
                &mut self,
                prep: &Prepared,
                params: &[f32],
                img: &[f32],
                logits: &mut [f32],
            ) -> bool {
                self.one
                    .as_mut()
                    .is_some_and(|o| o.forward_one(prep, params, img, logits))
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
engine_impl!(
    isa::Avx512,
    Avx512,
    train_avx512,
    forward_avx512,
    "avx512f,avx512vl,avx2,fma"
);
#[cfg(target_arch = "x86_64")]
engine_impl!(isa::Avx2, Avx2, train_avx2, forward_avx2, "avx2,fma");
engine_impl!(isa::Generic, Portable, train_generic, forward_generic);

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
    const N1: usize,
    const N2: usize,
    const MAX: bool,
>(
    one: Option<Box<dyn Single>>,
) -> Box<dyn Engine>
where
    Worker<I, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX>: Engine,
{
    Box::new(Worker::<I, A, L, XN, C1, P1, C2, P2, FL, N1, N2, MAX> {
        work: Work::boxed(),
        one,
        rows: Rows::default(),
        _m: core::marker::PhantomData,
    })
}

fn one<
    I: 'static,
    A: Act,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>() -> Option<Box<dyn Single>>
where
    OneWorker<I, A, XN, C1, P1, C2, P2, FL, MAX>: Single,
{
    Some(Box::new(OneWorker::<I, A, XN, C1, P1, C2, P2, FL, MAX> {
        one: single::One::boxed(),
        _m: core::marker::PhantomData,
    }))
}

fn with_model<I: 'static, A: Act, const L: usize>(kind: ModelKind) -> Box<dyn Engine>
where
    Worker<I, A, L, 32, 28, 14, 10, 5, 400, 6, 16, false>: Engine,
    Worker<I, A, L, 28, 24, 12, 8, 4, 256, 6, 16, true>: Engine,
    Worker<I, A, L, 28, 24, 12, 8, 4, 512, 16, 32, true>: Engine,
    OneWorker<I, A, 32, 28, 14, 10, 5, 400, false>: Single,
    OneWorker<I, A, 28, 24, 12, 8, 4, 256, true>: Single,
{
    match kind {
        ModelKind::LeNet5 => worker::<I, A, L, 32, 28, 14, 10, 5, 400, 6, 16, false>(one::<
            I,
            A,
            32,
            28,
            14,
            10,
            5,
            400,
            false,
        >()),
        ModelKind::LeNet5Max => worker::<I, A, L, 28, 24, 12, 8, 4, 256, 6, 16, true>(one::<
            I,
            A,
            28,
            24,
            12,
            8,
            4,
            256,
            true,
        >()),
        ModelKind::LeNet5Wide => worker::<I, A, L, 28, 24, 12, 8, 4, 512, 16, 32, true>(None),
    }
}

/// [`with_model`] for each activation.
macro_rules! with_act {
    ($isa:ty, $l:literal, $act:expr, $kind:expr) => {{
        use lenet_core::activation::Activation as Ac;
        use simd::{Relu, Sigmoid, Tanh};
        match $act {
            Ac::Sigmoid => with_model::<$isa, Sigmoid, $l>($kind),
            Ac::Relu => with_model::<$isa, Relu, $l>($kind),
            Ac::Tanh => with_model::<$isa, Tanh, $l>($kind),
        }
    }};
}

/// A batched engine (blocks of `set.lanes()` images) for one model.
pub(crate) fn new_engine(
    set: Isa,
    act: lenet_core::activation::Activation,
    kind: ModelKind,
) -> Box<dyn Engine> {
    match set {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => with_act!(isa::Avx512, 16, act, kind),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => with_act!(isa::Avx2, 8, act, kind),
        _ => with_act!(isa::Generic, 4, act, kind),
    }
}
