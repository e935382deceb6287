//! 2-D max and average pooling (PyTorch `MaxPool2d`, `AvgPool2d`): forward
//! and backward, applied to each channel on its own.
//!
//! This is the clean CPU reference: plain loops, no processor-specific
//! tricks. Faster paths live elsewhere and are tested against it.
//!
//! Legend (all sizes are const generic parameters):
//!
//! - `C`: channels (input and output alike);
//! - `H`, `W`: input rows and columns;
//! - `KH`, `KW`: pooling window rows and columns;
//! - `PH`, `PW`: padding added above and below, left and right;
//! - `SH`, `SW`: stride between output rows, between output columns;
//! - `OH`, `OW`: output rows and columns, floor mode:
//!   `OH = floor((H + 2*PH - KH) / SH) + 1` (see [`out_size`](crate::out_size)), checked at
//!   compile time.
//!
//! Shapes: input `x` is `(C, H, W)`, output `y` is `(C, OH, OW)`. As in
//! PyTorch, padding may be at most half the window (`PH <= KH / 2`,
//! `PW <= KW / 2`), so every window holds at least one input element. Max
//! pooling pads with `-inf`; average pooling pads with zeros and counts them
//! (`count_include_pad=True`), so its divisor is always `KH * KW`.
//! `x_pad` below is `x` padded that way; it is never built: each output
//! position works out which window taps fall inside `x` and visits only
//! those.

use crate::conv::taps;
use crate::shape::{Padding, Stride, Window, check_out_size};

/// Max pooling; overwrites `y` and records in `argmax` where each maximum
/// came from, for [`max_pool2d_backward`].
///
/// ```text
/// y[c][r][s]      = max_{u,v} x_pad[c][r*SH + u][s*SW + v]      (padding = -inf)
/// argmax[c][r][s] = a*W + b, the (a, b) in x[c] that gives that maximum
/// ```
///
/// Ties go to the first element in row-major scan order, and a NaN in the
/// window makes the output NaN (its index is recorded), both as in PyTorch.
///
/// Shapes: `y`, `argmax` `(C, OH, OW)`, `x` `(C, H, W)`. A wrong
/// `OH`/`OW`, a zero stride, an empty window or input, padding over half
/// the window, or `H * W > 65536` (argmax is a `u16`) is a compile-time
/// error.
///
/// # Examples
///
/// ```
/// use lenet_core::pool::max_pool2d;
/// use lenet_core::{Padding, Stride, Window};
///
/// let x = [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]];
/// let mut y = [[[0.0; 2]; 2]];
/// let mut argmax = [[[0; 2]; 2]];
/// max_pool2d(&mut y, &mut argmax, &x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y, [[[4.0, 5.0], [7.0, 8.0]]]);
/// assert_eq!(argmax, [[[4, 5], [7, 8]]]);
/// ```
pub fn max_pool2d<
    const C: usize,
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
    y: &mut [[[f32; OW]; OH]; C],      // (C, OH, OW)
    argmax: &mut [[[u16; OW]; OH]; C], // (C, OH, OW)
    x: &[[[f32; W]; H]; C],            // (C, H, W)
    _window: Window<KH, KW>,
    _pad: Padding<PH, PW>,
    _stride: Stride<SH, SW>,
) {
    const {
        assert!(H * W <= 1 << 16, "H * W must fit the u16 argmax");
        check_window((H, W), (KH, KW), (PH, PW));
        check_out_size(H, W, KH, KW, PH, PW, SH, SW, OH, OW);
    }
    for ((yc, ac), xc) in y.iter_mut().zip(argmax.iter_mut()).zip(x) {
        for (oy, (yr, ar)) in yc.iter_mut().zip(ac.iter_mut()).enumerate() {
            let r = taps(oy, SH, PH, H, KH);
            for (ox, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                let c = taps(ox, SW, PW, W, KW);
                // PyTorch's scan: start from -inf at the first element inside
                // the window, take strictly greater values or any NaN.
                let mut best = f32::NEG_INFINITY;
                let mut best_at = r.i0 * W + c.i0;
                for (a, xr) in (r.i0..).zip(&xc[r.i0..r.i0 + r.len]) {
                    for (b, &v) in (c.i0..).zip(&xr[c.i0..c.i0 + c.len]) {
                        if v > best || v.is_nan() {
                            best = v;
                            best_at = a * W + b;
                        }
                    }
                }
                *yv = best;
                // Fits: best_at < H * W <= 65536, checked above.
                *av = best_at as u16;
            }
        }
    }
}

/// Backward pass of [`max_pool2d`]: routes each output gradient to the
/// input element its forward pass picked, accumulating into `dx` (`+=`;
/// zero it first). Overlapping windows that picked the same element add up.
///
/// ```text
/// dx[c][a][b] += sum_{r,s : argmax[c][r][s] = a*W + b} dy[c][r][s]
/// ```
///
/// Shapes: `dx` `(C, H, W)`, `dy`, `argmax` `(C, OH, OW)`.
///
/// # Panics
///
/// If an `argmax` entry is not below `H * W` (it did not come from a
/// [`max_pool2d`] with this input size).
///
/// # Examples
///
/// ```
/// use lenet_core::pool::{max_pool2d, max_pool2d_backward};
/// use lenet_core::{Padding, Stride, Window};
///
/// let x = [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]];
/// let mut y = [[[0.0; 2]; 2]];
/// let mut argmax = [[[0; 2]; 2]];
/// max_pool2d(&mut y, &mut argmax, &x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
/// let dy = [[[1.0, 2.0], [3.0, 4.0]]];
/// let mut dx = [[[0.0; 3]; 3]];
/// max_pool2d_backward(&mut dx, &dy, &argmax);
/// assert_eq!(dx, [[[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 3.0, 4.0]]]);
/// ```
pub fn max_pool2d_backward<
    const C: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>(
    dx: &mut [[[f32; W]; H]; C],   // (C, H, W)
    dy: &[[[f32; OW]; OH]; C],     // (C, OH, OW)
    argmax: &[[[u16; OW]; OH]; C], // (C, OH, OW)
) {
    // dL/dx[c][a][b] = sum_{r,s : argmax[c][r][s] = a*W+b} dy[c][r][s]
    for ((dxc, dyc), ac) in dx.iter_mut().zip(dy).zip(argmax) {
        let dxc = dxc.as_flattened_mut(); // (H*W)
        for (&g, &at) in dyc.as_flattened().iter().zip(ac.as_flattened()) {
            dxc[usize::from(at)] += g;
        }
    }
}

/// Average pooling with zero padding counted in the average (PyTorch
/// `AvgPool2d` defaults: `count_include_pad=True`, floor mode); overwrites
/// `y`.
///
/// ```text
/// y[c][r][s] = sum_{u,v} x_pad[c][r*SH + u][s*SW + v] / (KH * KW)    (padding = 0)
/// ```
///
/// Shapes: `y` `(C, OH, OW)`, `x` `(C, H, W)`. A wrong `OH`/`OW`, a zero
/// stride, an empty window or input, or padding over half the window is a
/// compile-time error.
///
/// # Examples
///
/// ```
/// use lenet_core::pool::avg_pool2d;
/// use lenet_core::{Padding, Stride, Window};
///
/// let x = [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]];
/// let mut y = [[[0.0; 2]; 2]];
/// avg_pool2d(&mut y, &x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(y, [[[2.0, 3.0], [5.0, 6.0]]]);
///
/// // Padding counts as zeros: the corner window holds x[0][0] = 0 and
/// // three zeros, the next one x[0][1] + x[0][2] = 3 and two zeros.
/// let mut y = [[[0.0; 2]; 2]];
/// avg_pool2d(&mut y, &x, Window::<2, 2>, Padding::<1, 1>, Stride::<2, 2>);
/// assert_eq!(y, [[[0.0, 0.75], [2.25, 6.0]]]);
/// ```
pub fn avg_pool2d<
    const C: usize,
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
    y: &mut [[[f32; OW]; OH]; C], // (C, OH, OW)
    x: &[[[f32; W]; H]; C],       // (C, H, W)
    _window: Window<KH, KW>,
    _pad: Padding<PH, PW>,
    _stride: Stride<SH, SW>,
) {
    const {
        check_window((H, W), (KH, KW), (PH, PW));
        check_out_size(H, W, KH, KW, PH, PW, SH, SW, OH, OW);
    }
    let divisor = (KH * KW) as f32;
    for (yc, xc) in y.iter_mut().zip(x) {
        for (oy, yr) in yc.iter_mut().enumerate() {
            let r = taps(oy, SH, PH, H, KH);
            for (ox, yv) in yr.iter_mut().enumerate() {
                let c = taps(ox, SW, PW, W, KW);
                let mut sum = 0.0;
                for xr in &xc[r.i0..r.i0 + r.len] {
                    for v in &xr[c.i0..c.i0 + c.len] {
                        sum += v;
                    }
                }
                *yv = sum / divisor;
            }
        }
    }
}

/// Backward pass of [`avg_pool2d`]: spreads each output gradient evenly over
/// its window, accumulating into `dx` (`+=`; zero it first). The share that
/// falls on padding is dropped.
///
/// ```text
/// dx[c][a][b] += sum_{r,s,u,v : r*SH + u = a + PH, s*SW + v = b + PW} dy[c][r][s] / (KH * KW)
/// ```
///
/// Shapes: `dx` `(C, H, W)`, `dy` `(C, OH, OW)`. Compile-time checks as for
/// [`avg_pool2d`].
///
/// # Examples
///
/// ```
/// use lenet_core::pool::avg_pool2d_backward;
/// use lenet_core::{Padding, Stride, Window};
///
/// let dy = [[[1.0; 2]; 2]]; // L = sum(y) over a 3x3 input, window 2, stride 1
/// let mut dx = [[[0.0; 3]; 3]];
/// avg_pool2d_backward(&mut dx, &dy, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
/// assert_eq!(dx, [[[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]]);
/// ```
pub fn avg_pool2d_backward<
    const C: usize,
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
    dx: &mut [[[f32; W]; H]; C], // (C, H, W)
    dy: &[[[f32; OW]; OH]; C],   // (C, OH, OW)
    _window: Window<KH, KW>,
    _pad: Padding<PH, PW>,
    _stride: Stride<SH, SW>,
) {
    const {
        check_window((H, W), (KH, KW), (PH, PW));
        check_out_size(H, W, KH, KW, PH, PW, SH, SW, OH, OW);
    }
    let divisor = (KH * KW) as f32;
    // dL/dx[c][a][b] = sum over the windows (r, s) that cover x[c][a][b]
    //                  of dy[c][r][s] / (KH*KW)
    for (dxc, dyc) in dx.iter_mut().zip(dy) {
        for (oy, dyr) in dyc.iter().enumerate() {
            let r = taps(oy, SH, PH, H, KH);
            for (ox, &g) in dyr.iter().enumerate() {
                let c = taps(ox, SW, PW, W, KW);
                let share = g / divisor;
                for dxr in &mut dxc[r.i0..r.i0 + r.len] {
                    for d in &mut dxr[c.i0..c.i0 + c.len] {
                        *d += share;
                    }
                }
            }
        }
    }
}

/// The compile-time checks pooling adds to [`check_out_size`]: a non-empty
/// input `(H, W)` and window `(KH, KW)`, and padding `(PH, PW)` at most half
/// the window, as PyTorch requires. A failure is a compile error.
const fn check_window((h, w): (usize, usize), (kh, kw): (usize, usize), (ph, pw): (usize, usize)) {
    assert!(h > 0 && w > 0, "input must not be empty");
    assert!(kh > 0 && kw > 0, "window must not be empty");
    assert!(
        ph <= kh / 2 && pw <= kw / 2,
        "padding must be at most half the window"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRng, arange, assert_close, dot, numeric_grad};

    type Map<T, const C: usize, const H: usize, const W: usize> = [[[T; W]; H]; C];

    fn flat<T, const C: usize, const H: usize, const W: usize>(a: &Map<T, C, H, W>) -> &[T] {
        a.as_flattened().as_flattened()
    }

    /// `max_pool2d` into fresh buffers, which start at NaN and `u16::MAX` so
    /// that an output it forgets shows.
    fn max_pool<
        const C: usize,
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
        x: &Map<f32, C, H, W>,
        window: Window<KH, KW>,
        padding: Padding<PH, PW>,
        stride: Stride<SH, SW>,
    ) -> (Map<f32, C, OH, OW>, Map<u16, C, OH, OW>) {
        let mut y = [[[f32::NAN; OW]; OH]; C];
        let mut at = [[[u16::MAX; OW]; OH]; C];
        max_pool2d(&mut y, &mut at, x, window, padding, stride);
        (y, at)
    }

    /// `avg_pool2d` into a fresh buffer that starts at NaN.
    fn avg_pool<
        const C: usize,
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
        x: &Map<f32, C, H, W>,
        window: Window<KH, KW>,
        padding: Padding<PH, PW>,
        stride: Stride<SH, SW>,
    ) -> Map<f32, C, OH, OW> {
        let mut y = [[[f32::NAN; OW]; OH]; C];
        avg_pool2d(&mut y, x, window, padding, stride);
        y
    }

    /// Central differences of `loss` at `x`, one input at a time.
    fn numeric_dx<const C: usize, const H: usize, const W: usize>(
        x: &Map<f32, C, H, W>,
        loss: impl Fn(&Map<f32, C, H, W>) -> f64,
    ) -> Vec<f32> {
        numeric_grad(C * H * W, |j, d| {
            let mut x = *x;
            x.as_flattened_mut().as_flattened_mut()[j] += d;
            loss(&x)
        })
    }

    /// The definition, spelled out: max over the window of the padded
    /// input, scanning row-major and keeping the first maximum.
    fn max_pool_naive<const H: usize, const W: usize>(
        x: &[[f32; W]; H],
        (kh, kw): (usize, usize),
        (ph, pw): (usize, usize),
        (sh, sw): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> (Vec<f32>, Vec<u16>) {
        let mut y = Vec::new();
        let mut at = Vec::new();
        for r in 0..oh {
            for s in 0..ow {
                let mut best = (f32::NEG_INFINITY, None);
                for u in 0..kh {
                    for v in 0..kw {
                        let (a, b) = ((r * sh + u).checked_sub(ph), (s * sw + v).checked_sub(pw));
                        if let (Some(a), Some(b)) = (a, b)
                            && a < H
                            && b < W
                            && (best.1.is_none() || x[a][b] > best.0)
                        {
                            best = (x[a][b], Some(a * W + b));
                        }
                    }
                }
                y.push(best.0);
                at.push(best.1.unwrap() as u16);
            }
        }
        (y, at)
    }

    #[test]
    fn course_example_window_2_stride_1() {
        let x = [arange::<3, 3>(0.0)];
        let (y, at) = max_pool(&x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y, [[[4.0, 5.0], [7.0, 8.0]]]);
        assert_eq!(at, [[[4, 5], [7, 8]]]);
        let y = avg_pool(&x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(y, [[[2.0, 3.0], [5.0, 6.0]]]);
    }

    #[test]
    fn course_example_window_3_default_stride() {
        // nn.MaxPool2d(3): the stride defaults to the window.
        let x = [arange::<4, 4>(0.0)];
        let (y, at) = max_pool(&x, Window::<3, 3>, Padding::<0, 0>, Stride::<3, 3>);
        assert_eq!(y, [[[10.0]]]);
        assert_eq!(at, [[[10]]]);
    }

    #[test]
    fn course_example_padding_and_stride() {
        // nn.MaxPool2d(3, padding=1, stride=2)
        let x = [arange::<4, 4>(0.0)];
        let (y, at) = max_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        assert_eq!(y, [[[5.0, 7.0], [13.0, 15.0]]]);
        assert_eq!(at, [[[5, 7], [13, 15]]]);
    }

    #[test]
    fn course_example_rectangular_window() {
        // nn.MaxPool2d((2, 4), padding=(1, 2), stride=(2, 3))
        let x = [arange::<4, 4>(0.0)];
        let (y, _): (Map<f32, 1, 3, 2>, _) =
            max_pool(&x, Window::<2, 4>, Padding::<1, 2>, Stride::<2, 3>);
        assert_eq!(y, [[[1.0, 3.0], [9.0, 11.0], [13.0, 15.0]]]);
    }

    #[test]
    fn course_example_two_channels() {
        // torch.cat((X, X + 1), 1), nn.MaxPool2d(3, padding=1, stride=2)
        let x = [arange::<4, 4>(0.0), arange::<4, 4>(1.0)];
        let (y, _): (Map<f32, 2, 2, 2>, _) =
            max_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        assert_eq!(y[0], [[5.0, 7.0], [13.0, 15.0]]);
        assert_eq!(y[1], [[6.0, 8.0], [14.0, 16.0]]);
    }

    #[test]
    fn avg_pool_counts_padding_as_zeros() {
        // nn.AvgPool2d(3, padding=1, stride=2) on arange(16): the divisor is 9
        // even where the window hangs over the edge.
        let x = [arange::<4, 4>(0.0)];
        let y: Map<f32, 1, 2, 2> = avg_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        let sum = |rows: [usize; 3], cols: [usize; 3]| -> f32 {
            let mut s = 0.0;
            for r in rows.into_iter().filter(|&r| (1..5).contains(&r)) {
                for c in cols.into_iter().filter(|&c| (1..5).contains(&c)) {
                    s += ((r - 1) * 4 + (c - 1)) as f32;
                }
            }
            s / 9.0
        };
        let want = [
            [sum([0, 1, 2], [0, 1, 2]), sum([0, 1, 2], [2, 3, 4])],
            [sum([2, 3, 4], [0, 1, 2]), sum([2, 3, 4], [2, 3, 4])],
        ];
        assert_close(flat(&y), want.as_flattened(), 1e-6, 1e-6);
        // The top-left window holds 0, 1, 4, 5 and five zeros.
        assert_eq!(y[0][0][0], 10.0 / 9.0);
    }

    #[test]
    fn max_pool_ties_go_to_the_first_element() {
        let x = [[[1.0; 4]; 4]];
        let (y, at) = max_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        assert_eq!(y, [[[1.0; 2]; 2]]);
        // First element inside each window (padding never wins).
        assert_eq!(at, [[[0, 1], [4, 5]]]);
        // All -inf: the output is -inf and the index is still inside the window.
        let x = [[[f32::NEG_INFINITY; 4]; 4]];
        let (y, at) = max_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        assert_eq!(y, [[[f32::NEG_INFINITY; 2]; 2]]);
        assert_eq!(at, [[[0, 1], [4, 5]]]);
    }

    #[test]
    fn max_pool_propagates_nan() {
        let mut x = [arange::<4, 4>(0.0)];
        x[0][1][1] = f32::NAN;
        let (y, at): (Map<f32, 1, 2, 2>, _) =
            max_pool(&x, Window::<2, 2>, Padding::<0, 0>, Stride::<2, 2>);
        assert!(y[0][0][0].is_nan());
        assert_eq!(at[0][0][0], 5);
        assert_eq!(y[0][0][1], 7.0);
        assert_eq!((y[0][1][0], y[0][1][1]), (13.0, 15.0));
        // Larger values after the NaN do not replace it.
        let mut x = [[[0.0, f32::NAN], [9.0, 1.0]]];
        let (y, at): (Map<f32, 1, 1, 1>, _) =
            max_pool(&x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
        assert!(y[0][0][0].is_nan());
        assert_eq!(at[0][0][0], 1);
        x[0][0][1] = 2.0;
        let (y, at): (Map<f32, 1, 1, 1>, _) =
            max_pool(&x, Window::<2, 2>, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!((y[0][0][0], at[0][0][0]), (9.0, 2));
    }

    fn max_pool_against_naive<
        const C: usize,
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
        let mut rng = TestRng(seed);
        let mut x = [[[0.0f32; W]; H]; C];
        rng.fill(x.as_flattened_mut().as_flattened_mut());
        // Some ties as well: round to a coarse grid.
        for v in x.as_flattened_mut().as_flattened_mut() {
            *v = (*v * 4.0).round();
        }
        let (y, at): (Map<f32, C, OH, OW>, _) =
            max_pool(&x, Window::<KH, KW>, Padding::<PH, PW>, Stride::<SH, SW>);
        for (c, ((xc, yc), ac)) in x.iter().zip(&y).zip(&at).enumerate() {
            let (want_y, want_at) = max_pool_naive(xc, (KH, KW), (PH, PW), (SH, SW), (OH, OW));
            assert_eq!(yc.as_flattened(), &want_y[..], "channel {c}");
            assert_eq!(ac.as_flattened(), &want_at[..], "channel {c}");
        }
    }

    #[test]
    fn max_pool_matches_the_naive_definition() {
        max_pool_against_naive::<2, 7, 6, 3, 2, 1, 1, 2, 1, 4, 7>(1);
        max_pool_against_naive::<1, 9, 8, 4, 3, 2, 1, 3, 2, 4, 4>(2);
        max_pool_against_naive::<3, 5, 5, 1, 1, 0, 0, 2, 2, 3, 3>(3);
        // LeNet-5 (max variant): 28x28 -> 14x14 and 10x10 -> 5x5.
        max_pool_against_naive::<6, 28, 28, 2, 2, 0, 0, 2, 2, 14, 14>(4);
        max_pool_against_naive::<16, 10, 10, 2, 2, 0, 0, 2, 2, 5, 5>(5);
    }

    fn max_pool_gradcheck<
        const C: usize,
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
        let mut rng = TestRng(seed);
        // Distinct values 0.05 apart: a 1e-2 nudge never changes an argmax.
        let mut x = [[[0.0f32; W]; H]; C];
        rng.fill_distinct(x.as_flattened_mut().as_flattened_mut(), 0.05);
        let mut g = [[[0.0f32; OW]; OH]; C];
        rng.fill(g.as_flattened_mut().as_flattened_mut());
        let forward = |x: &Map<f32, C, H, W>| -> (Map<f32, C, OH, OW>, _) {
            max_pool(x, Window::<KH, KW>, Padding::<PH, PW>, Stride::<SH, SW>)
        };
        let mut dx = [[[0.0f32; W]; H]; C];
        max_pool2d_backward(&mut dx, &g, &forward(&x).1);
        let dx_num = numeric_dx(&x, |x| dot(flat(&forward(x).0), flat(&g)));
        assert_close(flat(&dx), &dx_num, 2e-3, 2e-3);
    }

    #[test]
    fn max_pool_backward_matches_finite_differences() {
        // Overlapping windows (stride < window), padding, non-square window.
        max_pool_gradcheck::<2, 7, 6, 3, 2, 1, 1, 2, 1, 4, 7>(11);
        max_pool_gradcheck::<1, 9, 8, 4, 3, 2, 1, 3, 2, 4, 4>(12);
        // Disjoint windows: exactly one nonzero per window.
        max_pool_gradcheck::<3, 6, 6, 2, 2, 0, 0, 2, 2, 3, 3>(13);
    }

    fn avg_pool_gradcheck<
        const C: usize,
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
        let mut rng = TestRng(seed);
        let mut x = [[[0.0f32; W]; H]; C];
        let mut g = [[[0.0f32; OW]; OH]; C];
        rng.fill(x.as_flattened_mut().as_flattened_mut());
        rng.fill(g.as_flattened_mut().as_flattened_mut());
        let (window, padding, stride) = (Window::<KH, KW>, Padding::<PH, PW>, Stride::<SH, SW>);
        let mut dx = [[[0.0f32; W]; H]; C];
        avg_pool2d_backward(&mut dx, &g, window, padding, stride);
        let dx_num = numeric_dx(&x, |x| {
            let y: Map<f32, C, OH, OW> = avg_pool(x, window, padding, stride);
            dot(flat(&y), flat(&g))
        });
        assert_close(flat(&dx), &dx_num, 2e-3, 2e-3);
    }

    #[test]
    fn avg_pool_backward_matches_finite_differences() {
        avg_pool_gradcheck::<2, 7, 6, 3, 2, 1, 1, 2, 1, 4, 7>(21);
        avg_pool_gradcheck::<1, 9, 8, 4, 3, 2, 1, 3, 2, 4, 4>(22);
        // LeNet-5 (classic): 28x28 -> 14x14.
        avg_pool_gradcheck::<1, 28, 28, 2, 2, 0, 0, 2, 2, 14, 14>(23);
        // Stride larger than the window: skipped inputs get no gradient.
        avg_pool_gradcheck::<1, 7, 7, 2, 2, 0, 0, 3, 3, 2, 2>(24);
    }

    #[test]
    fn backward_accumulates() {
        let x = [arange::<4, 4>(0.0)];
        let dy = [[[1.0, 2.0], [3.0, 4.0]]];
        let (_, at) = max_pool(&x, Window::<3, 3>, Padding::<1, 1>, Stride::<2, 2>);
        let mut dx = [[[1.0; 4]; 4]];
        max_pool2d_backward(&mut dx, &dy, &at);
        let mut want = [[[1.0; 4]; 4]];
        want[0][1][1] += 1.0;
        want[0][1][3] += 2.0;
        want[0][3][1] += 3.0;
        want[0][3][3] += 4.0;
        assert_eq!(dx, want);

        let mut dx = [[[1.0; 4]; 4]];
        avg_pool2d_backward(
            &mut dx,
            &dy,
            Window::<2, 2>,
            Padding::<0, 0>,
            Stride::<2, 2>,
        );
        let want: [[[f32; 4]; 4]; 1] = [core::array::from_fn(|a| {
            core::array::from_fn(|b| 1.0 + dy[0][a / 2][b / 2] / 4.0)
        })];
        assert_eq!(dx, want);
    }

    #[test]
    fn max_pool_backward_adds_up_overlapping_windows() {
        // Window 3, stride 1 on a 4x4 ramp: the largest element wins all four windows.
        let x = [arange::<4, 4>(0.0)];
        let (_, at): (Map<f32, 1, 2, 2>, _) =
            max_pool(&x, Window::<3, 3>, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(at, [[[10, 11], [14, 15]]]);
        let mut x2 = x;
        x2[0][2][2] = 100.0;
        let (_, at): (Map<f32, 1, 2, 2>, _) =
            max_pool(&x2, Window::<3, 3>, Padding::<0, 0>, Stride::<1, 1>);
        assert_eq!(at, [[[10; 2]; 2]]);
        let mut dx = [[[0.0; 4]; 4]];
        max_pool2d_backward(&mut dx, &[[[1.0, 2.0], [3.0, 4.0]]], &at);
        assert_eq!(dx[0][2][2], 10.0);
        assert_eq!(dx[0].as_flattened().iter().sum::<f32>(), 10.0);
    }
}
