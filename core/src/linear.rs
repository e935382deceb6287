//! Fully connected layer (PyTorch `nn.Linear`), forward and backward.
//!
//! Plain CPU reference. Legend: `I` input features, `O` output features.
//! The weight is stored as PyTorch stores it, `w: (O, I)`, so that
//! `y = x w^T + b`.
//!
//! # Examples
//!
//! ```
//! use lenet_core::linear::{linear, linear_backward};
//! let w = [[1.0f32, 2.0], [0.0, -1.0], [0.5, 0.5]]; // (O, I) = (3, 2)
//! let b = [0.0f32, 1.0, -1.0]; // (O)
//! let x = [3.0f32, 4.0]; // (I)
//! let mut y = [0.0f32; 3]; // (O)
//! linear(&mut y, &x, &w, Some(&b));
//! assert_eq!(y, [11.0, -3.0, 2.5]);
//!
//! let (mut dx, mut dw, mut db) = ([0.0f32; 2], [[0.0f32; 2]; 3], [0.0f32; 3]);
//! linear_backward(Some(&mut dx), &mut dw, Some(&mut db), &[1.0, 0.0, 0.0], &x, &w);
//! assert_eq!(dx, [1.0, 2.0]); // row 0 of w
//! assert_eq!(dw[0], [3.0, 4.0]); // x
//! assert_eq!(db, [1.0, 0.0, 0.0]);
//! ```

/// Forward: `y[o] = b[o] + sum_i w[o][i] * x[i]` (overwrites `y`; without a
/// bias, `b[o] = 0`).
///
/// # Examples
///
/// ```
/// use lenet_core::linear::linear;
/// let mut y = [0.0f32; 1];
/// linear(&mut y, &[1.0, 2.0, 3.0], &[[1.0, 1.0, 1.0]], None);
/// assert_eq!(y, [6.0]);
/// ```
pub fn linear<const I: usize, const O: usize>(
    y: &mut [f32; O],     // (O)
    x: &[f32; I],         // (I)
    w: &[[f32; I]; O],    // (O, I)
    b: Option<&[f32; O]>, // (O)
) {
    for o in 0..O {
        let mut acc = match b {
            Some(b) => b[o],
            None => 0.0,
        };
        for (&wi, &xi) in w[o].iter().zip(x) {
            acc += wi * xi;
        }
        y[o] = acc;
    }
}

/// Backward of [`linear`]; accumulates (`+=`) into every gradient given:
///
/// - `dx[i] += sum_o dy[o] * w[o][i]` (skipped when `dx` is `None`, e.g. for
///   the first layer);
/// - `dw[o][i] += dy[o] * x[i]`;
/// - `db[o] += dy[o]` (skipped when `db` is `None`, a layer without bias).
///
/// # Examples
///
/// ```
/// use lenet_core::linear::linear_backward;
/// let mut dw = [[1.0f32, 1.0]]; // accumulates onto what is there
/// linear_backward(None, &mut dw, None, &[2.0], &[3.0, -1.0], &[[0.0, 0.0]]);
/// assert_eq!(dw, [[7.0, -1.0]]);
/// ```
pub fn linear_backward<const I: usize, const O: usize>(
    dx: Option<&mut [f32; I]>, // (I)
    dw: &mut [[f32; I]; O],    // (O, I)
    db: Option<&mut [f32; O]>, // (O)
    dy: &[f32; O],             // (O)
    x: &[f32; I],              // (I)
    w: &[[f32; I]; O],         // (O, I)
) {
    // dL/dw[o][i] = dy[o] * x[i]
    for (dwo, &dyo) in dw.iter_mut().zip(dy) {
        for (dwoi, &xi) in dwo.iter_mut().zip(x) {
            *dwoi += dyo * xi;
        }
    }
    // dL/db[o] = dy[o]
    if let Some(db) = db {
        for (dbo, &dyo) in db.iter_mut().zip(dy) {
            *dbo += dyo;
        }
    }
    // dL/dx[i] = sum_o dy[o] * w[o][i]
    if let Some(dx) = dx {
        for (wo, &dyo) in w.iter().zip(dy) {
            for (dxi, &woi) in dx.iter_mut().zip(wo) {
                *dxi += dyo * woi;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: [[f32; 4]; 3] = [
        [0.5, -1.0, 0.25, 2.0],
        [1.5, 0.0, -0.75, 0.1],
        [-0.2, 0.3, 0.9, -1.1],
    ];
    const B: [f32; 3] = [0.1, -0.2, 0.3];
    const X: [f32; 4] = [1.0, -2.0, 0.5, 3.0];

    #[test]
    fn forward_matches_naive_sum() {
        let mut y = [0.0f32; 3];
        linear(&mut y, &X, &W, Some(&B));
        for o in 0..3 {
            let want: f32 = B[o] + (0..4).map(|i| W[o][i] * X[i]).sum::<f32>();
            assert!((y[o] - want).abs() < 1e-6);
        }
        let mut y0 = [0.0f32; 3];
        linear(&mut y0, &X, &W, None);
        for o in 0..3 {
            assert!((y[o] - y0[o] - B[o]).abs() < 1e-6);
        }
    }

    /// `L = sum_o g[o] * y[o]`; compares every gradient with central
    /// differences and checks that backward accumulates.
    #[test]
    fn backward_matches_finite_differences() {
        let g = [0.7f32, -1.3, 0.4];
        let loss = |x: &[f32; 4], w: &[[f32; 4]; 3], b: &[f32; 3]| -> f64 {
            let mut y = [0.0f32; 3];
            linear(&mut y, x, w, Some(b));
            y.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let (mut dx, mut dw, mut db) = ([1.0f32; 4], [[1.0f32; 4]; 3], [1.0f32; 3]);
        linear_backward(Some(&mut dx), &mut dw, Some(&mut db), &g, &X, &W);
        let h = 1e-2f32;
        let close = |got: f32, num: f64| (got as f64 - 1.0 - num).abs() < 1e-3;
        for i in 0..4 {
            let (mut xp, mut xm) = (X, X);
            xp[i] += h;
            xm[i] -= h;
            let num = (loss(&xp, &W, &B) - loss(&xm, &W, &B)) / (2.0 * h as f64);
            assert!(close(dx[i], num), "dx[{i}]");
        }
        for o in 0..3 {
            for i in 0..4 {
                let (mut wp, mut wm) = (W, W);
                wp[o][i] += h;
                wm[o][i] -= h;
                let num = (loss(&X, &wp, &B) - loss(&X, &wm, &B)) / (2.0 * h as f64);
                assert!(close(dw[o][i], num), "dw[{o}][{i}]");
            }
            let (mut bp, mut bm) = (B, B);
            bp[o] += h;
            bm[o] -= h;
            let num = (loss(&X, &W, &bp) - loss(&X, &W, &bm)) / (2.0 * h as f64);
            assert!(close(db[o], num), "db[{o}]");
        }
    }

    #[test]
    fn backward_skips_absent_gradients() {
        let mut dw = [[0.0f32; 4]; 3];
        linear_backward(None, &mut dw, None, &[1.0, 2.0, 3.0], &X, &W);
        assert_eq!(dw[2], X.map(|v| 3.0 * v));
    }
}
