//! 2-D cross-correlation (PyTorch `Conv2d`): forward and backward.
//!
//! This is the clean CPU reference: plain loops, no processor-specific
//! tricks. Faster paths live elsewhere and are tested against it.
//!
//! Legend (all sizes are const generic parameters):
//!
//! - `CI`, `CO`: input and output channels (`C` where there is one);
//! - `H`, `W`: input rows and columns;
//! - `KH`, `KW`: kernel rows and columns;
//! - `PH`, `PW`: zero padding added above and below, left and right;
//! - `SH`, `SW`: stride between output rows, between output columns;
//! - `OH`, `OW`: output rows and columns,
//!   `OH = floor((H + 2*PH - KH) / SH) + 1` (see [`out_size`](crate::out_size)), checked at
//!   compile time.
//!
//! Shapes: input `x` is `(CI, H, W)`, weight `w` is `(CO, CI, KH, KW)`
//! (PyTorch layout), bias `b` is `(CO)`, output `y` is `(CO, OH, OW)`.
//! `x_pad` below is `x` with `PH` zero rows above and below and `PW` zero
//! columns left and right; it is never built: each output position works out
//! which kernel taps fall inside `x` and visits only those.

use crate::shape::{Padding, Stride, check_out_size};

/// The kernel taps along one axis that fall inside the unpadded input, for
/// one output position.
///
/// Tap `t` of output position `o` reads input index `o*s + t - p`; the valid
/// taps are `k0..k0 + len`, and tap `k0` reads input index `i0`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taps {
    /// First kernel tap inside the input.
    pub(crate) k0: usize,
    /// Input index read by tap `k0`.
    pub(crate) i0: usize,
    /// Number of taps inside the input (0, with `k0 = i0 = 0`, when the
    /// window lies wholly in the padding).
    pub(crate) len: usize,
}

/// Valid taps of a window of `k` taps at output position `o` with stride `s`
/// over an input of length `n` padded by `p` on both sides.
#[inline]
pub(crate) const fn taps(o: usize, s: usize, p: usize, n: usize, k: usize) -> Taps {
    // Window start in padded coordinates; tap t reads padded index start + t.
    let start = o * s;
    // First tap with start + t >= p, last tap (exclusive) with start + t < n + p.
    let k0 = p.saturating_sub(start);
    let end = (n + p).saturating_sub(start);
    let k1 = if end < k { end } else { k };
    if k1 <= k0 {
        // The whole window lies in the padding (possible when p >= k).
        return Taps {
            k0: 0,
            i0: 0,
            len: 0,
        };
    }
    Taps {
        k0,
        i0: start + k0 - p,
        len: k1 - k0,
    }
}

/// `sum_{u,v} k[u][v] * x_pad[..][..]` over the taps `r` (rows) and `c`
/// (columns) that fall inside `x`.
#[inline]
fn window_dot<const H: usize, const W: usize, const KH: usize, const KW: usize>(
    x: &[[f32; W]; H],   // (H, W)
    k: &[[f32; KW]; KH], // (KH, KW)
    r: Taps,
    c: Taps,
) -> f32 {
    let mut acc = 0.0;
    for (xr, kr) in x[r.i0..r.i0 + r.len].iter().zip(&k[r.k0..r.k0 + r.len]) {
        for (xv, kv) in xr[c.i0..c.i0 + c.len].iter().zip(&kr[c.k0..c.k0 + c.len]) {
            acc += xv * kv;
        }
    }
    acc
}

/// `dst[dr + i][dc + j] += g * src[sr + i][sc + j]` for `i < rows`, `j < cols`.
/// Both gradients of a convolution are this update over the taps inside the
/// input: `dk[u][v] += g * x_pad[..][..]` reads the window of `x` into the
/// kernel, `dx[..][..] += g * k[u][v]` the kernel into the window of `dx`.
#[inline]
fn add_scaled<const DH: usize, const DW: usize, const RH: usize, const RW: usize>(
    dst: &mut [[f32; DW]; DH], // (DH, DW)
    (dr, dc): (usize, usize),
    g: f32,
    src: &[[f32; RW]; RH], // (RH, RW)
    (sr, sc): (usize, usize),
    (rows, cols): (usize, usize),
) {
    for (dst_r, src_r) in dst[dr..dr + rows].iter_mut().zip(&src[sr..sr + rows]) {
        for (d, v) in dst_r[dc..dc + cols].iter_mut().zip(&src_r[sc..sc + cols]) {
            *d += g * v;
        }
    }
}

/// Single-channel 2-D cross-correlation (the course's `corr2d`, generalised
/// to padding and stride); overwrites `y`.
///
/// `y[r][c] = sum_{u,v} k[u][v] * x_pad[r*SH + u][c*SW + v]`
///
/// Shapes: `y` `(OH, OW)`, `x` `(H, W)`, `k` `(KH, KW)`. A wrong `OH`/`OW`
/// is a compile-time error.
///
/// # Examples
///
/// ```
/// use lenet_core::conv::corr2d;
/// use lenet_core::{Padding, Stride};
///
/// let x = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]];
/// let k = [[0.0, 1.0], [2.0, 3.0]];
/// let mut y = [[0.0; 2]; 2];
/// corr2d(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y, [[19.0, 25.0], [37.0, 43.0]]);
/// ```
///
/// An output of the wrong size does not compile:
///
/// ```compile_fail
/// use lenet_core::conv::corr2d;
/// use lenet_core::{Padding, Stride};
///
/// let x = [[0.0; 3]; 3];
/// let k = [[0.0; 2]; 2];
/// let mut y = [[0.0; 3]; 3]; // should be 2x2
/// corr2d(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
/// ```
pub fn corr2d<
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    y: &mut [[f32; OW]; OH], // (OH, OW)
    x: &[[f32; W]; H],       // (H, W)
    k: &[[f32; KW]; KH],     // (KH, KW)
    pad: Padding<PH, PW>,
    stride: Stride<SH, SW>,
) {
    conv2d(
        core::array::from_mut(y),
        core::array::from_ref(x),
        core::array::from_ref(core::array::from_ref(k)),
        None,
        pad,
        stride,
    );
}

/// Multi-input-channel cross-correlation (the course's `corr2d_multi_in`):
/// one output channel, summed over the input channels; overwrites `y`.
///
/// `y[r][c] = sum_{i,u,v} k[i][u][v] * x_pad[i][r*SH + u][c*SW + v]`
///
/// Shapes: `y` `(OH, OW)`, `x` `(CI, H, W)`, `k` `(CI, KH, KW)`.
///
/// # Examples
///
/// ```
/// use lenet_core::conv::corr2d_multi_in;
/// use lenet_core::{Padding, Stride};
///
/// let x = [
///     [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
///     [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
/// ];
/// let k = [[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]];
/// let mut y = [[0.0; 2]; 2];
/// corr2d_multi_in(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y, [[56.0, 72.0], [104.0, 120.0]]);
/// ```
pub fn corr2d_multi_in<
    const CI: usize,
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    y: &mut [[f32; OW]; OH],   // (OH, OW)
    x: &[[[f32; W]; H]; CI],   // (CI, H, W)
    k: &[[[f32; KW]; KH]; CI], // (CI, KH, KW)
    pad: Padding<PH, PW>,
    stride: Stride<SH, SW>,
) {
    conv2d(
        core::array::from_mut(y),
        x,
        core::array::from_ref(k),
        None,
        pad,
        stride,
    );
}

/// 2-D convolution layer as PyTorch's `Conv2d` computes it (a
/// cross-correlation), with optional bias; overwrites `y`. With `b = None`
/// this is the course's `corr2d_multi_in_out`.
///
/// `y[o][r][c] = b[o] + sum_{i,u,v} w[o][i][u][v] * x_pad[i][r*SH + u][c*SW + v]`
///
/// Shapes: `y` `(CO, OH, OW)`, `x` `(CI, H, W)`, `w` `(CO, CI, KH, KW)`,
/// `b` `(CO)`. A wrong `OH`/`OW` or a zero stride is a compile-time error.
///
/// # Examples
///
/// Three output channels with kernels `K`, `K + 1`, `K + 2`:
///
/// ```
/// use lenet_core::conv::conv2d;
/// use lenet_core::{Padding, Stride};
///
/// let x = [
///     [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
///     [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
/// ];
/// let k = [[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]];
/// let w = [k, k.map(|c| c.map(|r| r.map(|v| v + 1.0))), k.map(|c| c.map(|r| r.map(|v| v + 2.0)))];
/// let mut y = [[[0.0; 2]; 2]; 3];
/// conv2d(&mut y, &x, &w, None, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y[0], [[56.0, 72.0], [104.0, 120.0]]);
/// assert_eq!(y[1], [[76.0, 100.0], [148.0, 172.0]]);
/// assert_eq!(y[2], [[96.0, 128.0], [192.0, 224.0]]);
///
/// // A bias adds one constant per output channel.
/// conv2d(&mut y, &x, &w, Some(&[1.0, 0.0, -1.0]), Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y[0][0][0], 57.0);
/// assert_eq!(y[2][1][1], 223.0);
/// ```
pub fn conv2d<
    const CI: usize,
    const CO: usize,
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    y: &mut [[[f32; OW]; OH]; CO],   // (CO, OH, OW)
    x: &[[[f32; W]; H]; CI],         // (CI, H, W)
    w: &[[[[f32; KW]; KH]; CI]; CO], // (CO, CI, KH, KW)
    b: Option<&[f32; CO]>,           // (CO)
    _pad: Padding<PH, PW>,
    _stride: Stride<SH, SW>,
) {
    const { check_out_size(H, W, KH, KW, PH, PW, SH, SW, OH, OW) };
    for (o, (yo, wo)) in y.iter_mut().zip(w).enumerate() {
        let bias = b.map_or(0.0, |b| b[o]);
        for (oy, yr) in yo.iter_mut().enumerate() {
            let r = taps(oy, SH, PH, H, KH);
            for (ox, yv) in yr.iter_mut().enumerate() {
                let c = taps(ox, SW, PW, W, KW);
                let mut acc = bias;
                for (xi, wi) in x.iter().zip(wo) {
                    acc += window_dot(xi, wi, r, c);
                }
                *yv = acc;
            }
        }
    }
}

/// Backward pass of [`corr2d`]: accumulates the kernel gradient into `dk`
/// and, when given, the input gradient into `dx` (`+=`; zero them first).
///
/// ```text
/// dk[u][v] += sum_{r,c} dy[r][c] * x_pad[r*SH + u][c*SW + v]
/// dx[a][b] += sum_{r,c,u,v : r*SH + u = a + PH, c*SW + v = b + PW} dy[r][c] * k[u][v]
/// ```
///
/// Shapes: `dx`, `x` `(H, W)`; `dk`, `k` `(KH, KW)`; `dy` `(OH, OW)`.
///
/// # Examples
///
/// ```
/// use lenet_core::conv::corr2d_backward;
/// use lenet_core::{Padding, Stride};
///
/// let x = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]];
/// let k = [[0.0, 1.0], [2.0, 3.0]];
/// let dy = [[1.0; 2]; 2]; // L = sum(y)
/// let mut dx = [[0.0; 3]; 3];
/// let mut dk = [[0.0; 2]; 2];
/// corr2d_backward(Some(&mut dx), &mut dk, &dy, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
/// // Each tap sees the sum of the 2x2 block of x it slides over.
/// assert_eq!(dk, [[8.0, 12.0], [20.0, 24.0]]);
/// // Each input sees the sum of the taps that touch it.
/// assert_eq!(dx, [[0.0, 1.0, 1.0], [2.0, 6.0, 4.0], [2.0, 5.0, 3.0]]);
/// ```
pub fn corr2d_backward<
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    dx: Option<&mut [[f32; W]; H]>, // (H, W)
    dk: &mut [[f32; KW]; KH],       // (KH, KW)
    dy: &[[f32; OW]; OH],           // (OH, OW)
    x: &[[f32; W]; H],              // (H, W)
    k: &[[f32; KW]; KH],            // (KH, KW)
    pad: Padding<PH, PW>,
    stride: Stride<SH, SW>,
) {
    // One input and one output channel of conv2d_backward:
    // dL/dk[u][v] = sum_{r,c} dy[r][c] * x_pad[r*SH+u][c*SW+v]
    // dL/dx[a][b] = sum_{r,c,u,v : r*SH+u = a+PH, c*SW+v = b+PW} dy[r][c] * k[u][v]
    conv2d_backward(
        dx.map(core::array::from_mut),
        core::array::from_mut(core::array::from_mut(dk)),
        None,
        core::array::from_ref(dy),
        core::array::from_ref(x),
        core::array::from_ref(core::array::from_ref(k)),
        pad,
        stride,
    );
}

/// Backward pass of [`conv2d`]: accumulates the weight gradient into `dw`
/// and, when given, the bias gradient into `db` and the input gradient into
/// `dx` (`+=`; zero them first).
///
/// ```text
/// db[o]          += sum_{r,c} dy[o][r][c]
/// dw[o][i][u][v] += sum_{r,c} dy[o][r][c] * x_pad[i][r*SH + u][c*SW + v]
/// dx[i][a][b]    += sum_{o,r,c,u,v : r*SH + u = a + PH, c*SW + v = b + PW} dy[o][r][c] * w[o][i][u][v]
/// ```
///
/// Shapes: `dx`, `x` `(CI, H, W)`; `dw`, `w` `(CO, CI, KH, KW)`; `db` `(CO)`;
/// `dy` `(CO, OH, OW)`.
///
/// # Examples
///
/// ```
/// use lenet_core::conv::conv2d_backward;
/// use lenet_core::{Padding, Stride};
///
/// // One 2x2 input channel, one 1x1 kernel, padding 1: y is 4x4.
/// let x = [[[1.0, 2.0], [3.0, 4.0]]];
/// let w = [[[[0.5]]]];
/// let dy = [[[1.0; 4]; 4]]; // L = sum(y)
/// let mut dx = [[[0.0; 2]; 2]];
/// let mut dw = [[[[0.0]]]];
/// let mut db = [0.0];
/// conv2d_backward(Some(&mut dx), &mut dw, Some(&mut db), &dy, &x, &w, Padding::<1, 1>, Stride::<1, 1>);
/// assert_eq!(db, [16.0]); // 16 outputs, padding included
/// assert_eq!(dw, [[[[10.0]]]]); // padding contributes zeros
/// assert_eq!(dx, [[[0.5, 0.5], [0.5, 0.5]]]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<
    const CI: usize,
    const CO: usize,
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    mut dx: Option<&mut [[[f32; W]; H]; CI]>, // (CI, H, W)
    dw: &mut [[[[f32; KW]; KH]; CI]; CO],     // (CO, CI, KH, KW)
    mut db: Option<&mut [f32; CO]>,           // (CO)
    dy: &[[[f32; OW]; OH]; CO],               // (CO, OH, OW)
    x: &[[[f32; W]; H]; CI],                  // (CI, H, W)
    w: &[[[[f32; KW]; KH]; CI]; CO],          // (CO, CI, KH, KW)
    _pad: Padding<PH, PW>,
    _stride: Stride<SH, SW>,
) {
    const { check_out_size(H, W, KH, KW, PH, PW, SH, SW, OH, OW) };
    for (o, ((dyo, dwo), wo)) in dy.iter().zip(dw.iter_mut()).zip(w).enumerate() {
        // dL/db[o] = sum_{r,c} dy[o][r][c]
        if let Some(db) = db.as_deref_mut() {
            db[o] += dyo.as_flattened().iter().sum::<f32>();
        }
        for (oy, dyr) in dyo.iter().enumerate() {
            let r = taps(oy, SH, PH, H, KH);
            for (ox, &g) in dyr.iter().enumerate() {
                let c = taps(ox, SW, PW, W, KW);
                // dL/dw[o][i][u][v] = sum_{r,c} dy[o][r][c] * x_pad[i][r*SH+u][c*SW+v]
                for (dwi, xi) in dwo.iter_mut().zip(x) {
                    add_scaled(dwi, (r.k0, c.k0), g, xi, (r.i0, c.i0), (r.len, c.len));
                }
                // dL/dx[i][a][b] = sum over the (o, r, c, u, v) that read x[i][a][b]
                //                  of dy[o][r][c] * w[o][i][u][v]
                if let Some(dx) = dx.as_deref_mut() {
                    for (dxi, wi) in dx.iter_mut().zip(wo) {
                        add_scaled(dxi, (r.i0, c.i0), g, wi, (r.k0, c.k0), (r.len, c.len));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::out_size;
    use crate::testing::{TestRng, arange, assert_close, dot, numeric_grad};

    /// Random input, weights and bias for a convolution, drawn in that order
    /// from `seed`; the generator comes back for whatever the test draws next.
    #[allow(clippy::type_complexity)]
    fn random_conv<
        const CI: usize,
        const CO: usize,
        const H: usize,
        const W: usize,
        const KH: usize,
        const KW: usize,
    >(
        seed: u64,
    ) -> (
        TestRng,
        [[[f32; W]; H]; CI],
        [[[[f32; KW]; KH]; CI]; CO],
        [f32; CO],
    ) {
        let mut rng = TestRng(seed);
        let mut x = [[[0.0f32; W]; H]; CI];
        let mut w = [[[[0.0f32; KW]; KH]; CI]; CO];
        let mut b = [0.0f32; CO];
        rng.fill(x.as_flattened_mut().as_flattened_mut());
        rng.fill(w.as_flattened_mut().as_flattened_mut().as_flattened_mut());
        rng.fill(&mut b);
        (rng, x, w, b)
    }

    /// The edge-detection input from the course: 6x8 ones, columns 2..6 zero.
    fn edge_input() -> [[f32; 8]; 6] {
        [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]; 6]
    }

    #[test]
    fn corr2d_course_example() {
        let x = arange::<3, 3>(0.0);
        let k = [[0.0, 1.0], [2.0, 3.0]];
        let mut y = [[0.0; 2]; 2];
        corr2d(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y, [[19.0, 25.0], [37.0, 43.0]]);
    }

    #[test]
    fn corr2d_3x3_kernel_on_4x4() {
        let x: [[f32; 4]; 4] = core::array::from_fn(|i| core::array::from_fn(|j| (i + j) as f32));
        let k = arange::<3, 3>(0.0);
        let mut y = [[0.0; 2]; 2];
        corr2d(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y, [[96.0, 132.0], [132.0, 168.0]]);
    }

    #[test]
    fn corr2d_multi_in_course_example() {
        let x = [arange::<3, 3>(0.0), arange::<3, 3>(1.0)];
        let k = [arange::<2, 2>(0.0), arange::<2, 2>(1.0)];
        let mut y = [[0.0; 2]; 2];
        corr2d_multi_in(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y, [[56.0, 72.0], [104.0, 120.0]]);
    }

    #[test]
    fn conv2d_multi_out_course_example() {
        let x = [arange::<3, 3>(0.0), arange::<3, 3>(1.0)];
        let k = [arange::<2, 2>(0.0), arange::<2, 2>(1.0)];
        let plus = |d: f32| k.map(|c| c.map(|r| r.map(|v| v + d)));
        let w = [plus(0.0), plus(1.0), plus(2.0)];
        let mut y = [[[0.0; 2]; 2]; 3];
        conv2d(&mut y, &x, &w, None, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y[0], [[56.0, 72.0], [104.0, 120.0]]);
        assert_eq!(y[1], [[76.0, 100.0], [148.0, 172.0]]);
        assert_eq!(y[2], [[96.0, 128.0], [192.0, 224.0]]);
    }

    #[test]
    fn conv2d_1x1_is_a_matrix_product() {
        // Y = K (CO, CI) @ X (CI, H*W), the course's corr2d_multi_in_out_1x1.
        let mut rng = TestRng(11);
        let mut x = [[[0.0f32; 3]; 3]; 3];
        let mut w = [[[[0.0f32; 1]; 1]; 3]; 2];
        rng.fill(x.as_flattened_mut().as_flattened_mut());
        rng.fill(w.as_flattened_mut().as_flattened_mut().as_flattened_mut());
        let mut y = [[[0.0; 3]; 3]; 2];
        conv2d(&mut y, &x, &w, None, Padding::<0, 0>, Stride::<1, 1>);
        let mut want = [0.0f32; 2 * 9];
        for o in 0..2 {
            for p in 0..9 {
                for i in 0..3 {
                    want[o * 9 + p] += w[o][i][0][0] * x[i].as_flattened()[p];
                }
            }
        }
        assert_close(y.as_flattened().as_flattened(), &want, 1e-6, 0.0);
    }

    #[test]
    fn corr2d_detects_vertical_edges() {
        let x = edge_input();
        let k = [[1.0, -1.0]];
        let mut y = [[0.0; 7]; 6];
        corr2d(&mut y, &x, &k, Padding::<0, 0>, Stride::<1, 1>);
        for row in y {
            assert_eq!(row, [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]);
        }
        // The transposed image has horizontal edges only: the same kernel sees none.
        let xt: [[f32; 6]; 8] = core::array::from_fn(|r| core::array::from_fn(|c| x[c][r]));
        let mut yt = [[1.0; 5]; 8];
        corr2d(&mut yt, &xt, &k, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(yt, [[0.0; 5]; 8]);
    }

    #[test]
    fn output_sizes_follow_the_course() {
        // The output arrays' sizes are checked at compile time; the values
        // are checked against the naive reference below.
        // Padding (2, 1) with kernel (5, 3) keeps 8x8.
        assert_eq!(out_size(8, 5, 2, 1), 8);
        assert_eq!(out_size(8, 3, 1, 1), 8);
        against_naive::<1, 1, 8, 8, 5, 3, 2, 1, 1, 1, 8, 8>(1);
        // Padding 1, kernel 3, stride 2 halves 8x8.
        against_naive::<1, 1, 8, 8, 3, 3, 1, 1, 2, 2, 4, 4>(2);
        // Kernel (3, 5), padding (0, 1), stride (3, 4) gives 2x2.
        against_naive::<1, 1, 8, 8, 3, 5, 0, 1, 3, 4, 2, 2>(3);
    }

    /// The definition, spelled out: index the padded input, zero outside.
    fn conv2d_naive<
        const CI: usize,
        const CO: usize,
        const H: usize,
        const W: usize,
        const KH: usize,
        const KW: usize,
        const OH: usize,
        const OW: usize,
    >(
        x: &[[[f32; W]; H]; CI],
        w: &[[[[f32; KW]; KH]; CI]; CO],
        b: &[f32; CO],
        (ph, pw): (usize, usize),
        (sh, sw): (usize, usize),
    ) -> [[[f32; OW]; OH]; CO] {
        let x_pad = |i: usize, a: usize, c: usize| -> f32 {
            match (a.checked_sub(ph), c.checked_sub(pw)) {
                (Some(r), Some(c)) if r < H && c < W => x[i][r][c],
                _ => 0.0,
            }
        };
        core::array::from_fn(|o| {
            core::array::from_fn(|r| {
                core::array::from_fn(|c| {
                    let mut acc = b[o];
                    for (i, wi) in w[o].iter().enumerate() {
                        for (u, wr) in wi.iter().enumerate() {
                            for (v, wv) in wr.iter().enumerate() {
                                acc += wv * x_pad(i, r * sh + u, c * sw + v);
                            }
                        }
                    }
                    acc
                })
            })
        })
    }

    fn against_naive<
        const CI: usize,
        const CO: usize,
        const H: usize,
        const W: usize,
        const KH: usize,
        const KW: usize,
        const PH: usize,
        const PW: usize,
        const SH: usize,
        const SW: usize,
        const OH: usize,
        const OW: usize,
    >(
        seed: u64,
    ) {
        let (_, x, w, b) = random_conv::<CI, CO, H, W, KH, KW>(seed);
        let mut y = [[[f32::NAN; OW]; OH]; CO];
        conv2d(
            &mut y,
            &x,
            &w,
            Some(&b),
            Padding::<PH, PW>,
            Stride::<SH, SW>,
        );
        let want: [[[f32; OW]; OH]; CO] = conv2d_naive(&x, &w, &b, (PH, PW), (SH, SW));
        assert_close(
            y.as_flattened().as_flattened(),
            want.as_flattened().as_flattened(),
            1e-5,
            1e-5,
        );
    }

    #[test]
    fn conv2d_matches_the_naive_definition() {
        // Padding, stride, non-square kernels, several channels.
        against_naive::<2, 3, 7, 6, 3, 2, 1, 2, 2, 1, 4, 9>(4);
        // Padding wider than the kernel: some windows hold padding only.
        against_naive::<2, 2, 4, 5, 2, 3, 3, 0, 3, 2, 3, 2>(5);
        // 1x1 kernel with stride and padding.
        against_naive::<3, 2, 5, 4, 1, 1, 1, 0, 2, 2, 4, 2>(6);
        // Stride larger than the kernel skips inputs; LeNet-5's two layers.
        against_naive::<1, 2, 9, 9, 2, 2, 0, 0, 3, 3, 3, 3>(7);
        against_naive::<1, 6, 28, 28, 5, 5, 2, 2, 1, 1, 28, 28>(8);
        against_naive::<6, 16, 14, 14, 5, 5, 0, 0, 1, 1, 10, 10>(9);
    }

    /// Central-difference check of `conv2d_backward` on
    /// `L = sum_{o,r,c} g[o][r][c] * y[o][r][c]`, so `dy = g`.
    fn conv2d_gradcheck<
        const CI: usize,
        const CO: usize,
        const H: usize,
        const W: usize,
        const KH: usize,
        const KW: usize,
        const PH: usize,
        const PW: usize,
        const SH: usize,
        const SW: usize,
        const OH: usize,
        const OW: usize,
    >(
        seed: u64,
    ) {
        let (mut rng, x, w, b) = random_conv::<CI, CO, H, W, KH, KW>(seed);
        let mut g = [[[0.0f32; OW]; OH]; CO];
        rng.fill(g.as_flattened_mut().as_flattened_mut());

        let loss = |x: &[[[f32; W]; H]; CI], w: &[[[[f32; KW]; KH]; CI]; CO], b: &[f32; CO]| {
            let mut y = [[[0.0f32; OW]; OH]; CO];
            conv2d(&mut y, x, w, Some(b), Padding::<PH, PW>, Stride::<SH, SW>);
            dot(
                y.as_flattened().as_flattened(),
                g.as_flattened().as_flattened(),
            )
        };

        let mut dx = [[[0.0f32; W]; H]; CI];
        let mut dw = [[[[0.0f32; KW]; KH]; CI]; CO];
        let mut db = [0.0f32; CO];
        conv2d_backward(
            Some(&mut dx),
            &mut dw,
            Some(&mut db),
            &g,
            &x,
            &w,
            Padding::<PH, PW>,
            Stride::<SH, SW>,
        );

        let dx_num = numeric_grad(CI * H * W, |j, d| {
            let mut x = x;
            x.as_flattened_mut().as_flattened_mut()[j] += d;
            loss(&x, &w, &b)
        });
        let dw_num = numeric_grad(CO * CI * KH * KW, |j, d| {
            let mut w = w;
            w.as_flattened_mut().as_flattened_mut().as_flattened_mut()[j] += d;
            loss(&x, &w, &b)
        });
        let db_num = numeric_grad(CO, |j, d| {
            let mut b = b;
            b[j] += d;
            loss(&x, &w, &b)
        });
        assert_close(dx.as_flattened().as_flattened(), &dx_num, 2e-3, 2e-3);
        assert_close(
            dw.as_flattened().as_flattened().as_flattened(),
            &dw_num,
            2e-3,
            2e-3,
        );
        assert_close(&db, &db_num, 2e-3, 2e-3);
    }

    #[test]
    fn conv2d_backward_matches_finite_differences() {
        conv2d_gradcheck::<2, 3, 7, 6, 3, 2, 1, 2, 2, 1, 4, 9>(21);
        conv2d_gradcheck::<3, 2, 6, 7, 2, 4, 1, 1, 1, 2, 7, 3>(22);
        conv2d_gradcheck::<2, 2, 4, 5, 2, 3, 3, 0, 3, 2, 3, 2>(23);
        conv2d_gradcheck::<2, 2, 5, 4, 1, 1, 1, 0, 2, 2, 4, 2>(24);
    }

    #[test]
    fn corr2d_backward_matches_finite_differences() {
        // Non-square kernel, padding and stride on one channel.
        let mut rng = TestRng(31);
        let mut x = [[0.0f32; 7]; 6];
        let mut k = [[0.0f32; 2]; 3];
        let mut g = [[0.0f32; 5]; 3];
        rng.fill(x.as_flattened_mut());
        rng.fill(k.as_flattened_mut());
        rng.fill(g.as_flattened_mut());
        // Padding (1, 2), stride (2, 2): OH = (6 + 2 - 3) / 2 + 1 = 3,
        // OW = (7 + 4 - 2) / 2 + 1 = 5.
        let loss = |x: &[[f32; 7]; 6], k: &[[f32; 2]; 3]| {
            let mut y = [[0.0f32; 5]; 3];
            corr2d(&mut y, x, k, Padding::<1, 2>, Stride::<2, 2>);
            dot(y.as_flattened(), g.as_flattened())
        };
        let mut dx = [[0.0f32; 7]; 6];
        let mut dk = [[0.0f32; 2]; 3];
        corr2d_backward(
            Some(&mut dx),
            &mut dk,
            &g,
            &x,
            &k,
            Padding::<1, 2>,
            Stride::<2, 2>,
        );

        let dx_num = numeric_grad(6 * 7, |j, d| {
            let mut x = x;
            x.as_flattened_mut()[j] += d;
            loss(&x, &k)
        });
        let dk_num = numeric_grad(3 * 2, |j, d| {
            let mut k = k;
            k.as_flattened_mut()[j] += d;
            loss(&x, &k)
        });
        assert_close(dx.as_flattened(), &dx_num, 2e-3, 2e-3);
        assert_close(dk.as_flattened(), &dk_num, 2e-3, 2e-3);
        // Every input is read by some window here, so none has a zero gradient.
        assert!(dx.as_flattened().iter().all(|&v| v != 0.0));

        // Without dx only dk is produced, and it is the same.
        let mut dk2 = [[0.0f32; 2]; 3];
        corr2d_backward(None, &mut dk2, &g, &x, &k, Padding::<1, 2>, Stride::<2, 2>);
        assert_eq!(dk2, dk);
    }

    #[test]
    fn backward_accumulates() {
        let mut rng = TestRng(41);
        let mut x = [[[0.0f32; 5]; 5]; 2];
        let mut w = [[[[0.0f32; 3]; 3]; 2]; 2];
        let mut dy = [[[0.0f32; 3]; 3]; 2];
        rng.fill(x.as_flattened_mut().as_flattened_mut());
        rng.fill(w.as_flattened_mut().as_flattened_mut().as_flattened_mut());
        rng.fill(dy.as_flattened_mut().as_flattened_mut());
        let run =
            |dx: &mut [[[f32; 5]; 5]; 2], dw: &mut [[[[f32; 3]; 3]; 2]; 2], db: &mut [f32; 2]| {
                conv2d_backward(
                    Some(dx),
                    dw,
                    Some(db),
                    &dy,
                    &x,
                    &w,
                    Padding::<1, 1>,
                    Stride::<2, 2>,
                );
            };
        let (mut dx1, mut dw1, mut db1) = ([[[0.0; 5]; 5]; 2], [[[[0.0; 3]; 3]; 2]; 2], [0.0; 2]);
        run(&mut dx1, &mut dw1, &mut db1);
        let (mut dx2, mut dw2, mut db2) = ([[[0.0; 5]; 5]; 2], [[[[0.0; 3]; 3]; 2]; 2], [0.0; 2]);
        run(&mut dx2, &mut dw2, &mut db2);
        run(&mut dx2, &mut dw2, &mut db2);
        let twice = |s: &[f32]| s.iter().map(|v| 2.0 * v).collect::<Vec<_>>();
        assert_close(
            dx2.as_flattened().as_flattened(),
            &twice(dx1.as_flattened().as_flattened()),
            1e-6,
            1e-6,
        );
        assert_close(
            dw2.as_flattened().as_flattened().as_flattened(),
            &twice(dw1.as_flattened().as_flattened().as_flattened()),
            1e-6,
            1e-6,
        );
        assert_close(&db2, &twice(&db1), 1e-6, 1e-6);
        assert!(db1.iter().all(|&v| v != 0.0));
    }

    /// Squared-error sum `sum (y_hat - y)^2` and its gradient `2 (y_hat - y)`.
    fn squared_error(
        dy: &mut [[[f32; 7]; 6]; 1],
        y_hat: &[[[f32; 7]; 6]; 1],
        y: &[[f32; 7]; 6],
    ) -> f32 {
        let mut loss = 0.0;
        for ((d, p), t) in dy[0]
            .as_flattened_mut()
            .iter_mut()
            .zip(y_hat[0].as_flattened())
            .zip(y.as_flattened())
        {
            loss += (p - t) * (p - t);
            *d = 2.0 * (p - t);
        }
        loss
    }

    /// The course's "learning a kernel": recover `[[1, -1]]` from the edge
    /// image and its edge map by plain gradient descent on a Conv2d(1, 1, (1, 2)).
    fn learn_kernel(
        w: &mut [[[[f32; 2]; 1]; 1]; 1],
        mut b: Option<&mut [f32; 1]>,
        lr: f32,
        steps: usize,
    ) -> f32 {
        let x = [edge_input()];
        let mut y = [[0.0; 7]; 6];
        corr2d(
            &mut y,
            &x[0],
            &[[1.0, -1.0]],
            Padding::<0, 0>,
            Stride::<1, 1>,
        );
        let mut y_hat = [[[0.0; 7]; 6]; 1];
        let mut dy = [[[0.0; 7]; 6]; 1];
        for _ in 0..steps {
            conv2d(
                &mut y_hat,
                &x,
                w,
                b.as_deref(),
                Padding::<0, 0>,
                Stride::<1, 1>,
            );
            squared_error(&mut dy, &y_hat, &y); // fills dy
            let mut dw = [[[[0.0; 2]; 1]; 1]; 1];
            let mut db = [0.0; 1];
            conv2d_backward(
                None,
                &mut dw,
                Some(&mut db),
                &dy,
                &x,
                w,
                Padding::<0, 0>,
                Stride::<1, 1>,
            );
            for (p, d) in w[0][0][0].iter_mut().zip(dw[0][0][0]) {
                *p -= lr * d;
            }
            if let Some(b) = b.as_deref_mut() {
                b[0] -= lr * db[0];
            }
        }
        conv2d(
            &mut y_hat,
            &x,
            w,
            b.as_deref(),
            Padding::<0, 0>,
            Stride::<1, 1>,
        );
        squared_error(&mut dy, &y_hat, &y)
    }

    #[test]
    fn learns_the_edge_kernel_without_bias() {
        // The course: lr 3e-2, squared-error sum; here 20 steps from a fixed init.
        let mut w = [[[[0.3, 0.2]]]];
        let loss = learn_kernel(&mut w, None, 0.03, 20);
        let k = w[0][0][0];
        assert!(
            (k[0] - 1.0).abs() < 0.05 && (k[1] + 1.0).abs() < 0.05,
            "kernel {k:?}"
        );
        assert!(loss < 0.05, "loss {loss}");
    }

    #[test]
    fn learns_the_edge_kernel_with_bias() {
        // lr 1e-2, 30 steps. The course starts from a random init; this fixed
        // small init converges like the ones it draws.
        let mut w = [[[[0.3, 0.2]]]];
        let mut b = [0.1];
        let loss = learn_kernel(&mut w, Some(&mut b), 0.01, 30);
        let k = w[0][0][0];
        assert!(
            (k[0] - 1.0).abs() < 0.05 && (k[1] + 1.0).abs() < 0.05,
            "kernel {k:?}"
        );
        assert!(b[0].abs() < 0.05, "bias {b:?}");
        assert!(loss < 0.05, "loss {loss}");
    }

    #[test]
    fn taps_cover_exactly_the_inside() {
        // Every (output, tap) pair that reads inside 0..n is counted once.
        for n in 1..7 {
            for k in 1..5 {
                for p in 0..4 {
                    for s in 1..4 {
                        for o in 0..out_size(n, k, p, s) {
                            let t = taps(o, s, p, n, k);
                            let inside: Vec<usize> = (0..k)
                                .filter(|&u| (o * s + u).checked_sub(p).is_some_and(|i| i < n))
                                .collect();
                            assert_eq!(t.len, inside.len(), "n {n} k {k} p {p} s {s} o {o}");
                            if let Some(&u) = inside.first() {
                                assert_eq!((t.k0, t.i0), (u, o * s + u - p));
                            } else {
                                assert_eq!((t.k0, t.i0), (0, 0));
                            }
                        }
                    }
                }
            }
        }
    }
}
