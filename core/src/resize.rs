//! Bilinear resizing, as `F.interpolate(x, size, mode="bilinear",
//! align_corners=False)` (PyTorch's `nn.Upsample`, and torchvision's
//! `Resize` on a tensor when it enlarges; torchvision applied to a PIL
//! image also rounds the result to 8 bits).
//!
//! Output pixel `o` of a side of `n_out` samples the input at
//! `max((o + 0.5) * n_in / n_out - 0.5, 0)`, between pixels `i0 = floor`
//! and `i1 = min(i0 + 1, n_in - 1)` with weights `1 - l` and `l`. Rows and
//! columns are separable:
//! `y = wy0 * (wx0 * x[i0][j0] + wx1 * x[i0][j1]) + wy1 * (wx0 * x[i1][j0] + wx1 * x[i1][j1])`.
//!
//! # Examples
//!
//! ```
//! use lenet_core::resize::{forward, taps};
//! // 2 -> 4: the outer outputs copy the edge, the inner ones blend.
//! let x = [0.0f32, 1.0];
//! let mut y = [0.0f32; 4];
//! forward(&x, 1, 1, 2, &mut y, 1, 4);
//! assert_eq!(y, [0.0, 0.25, 0.75, 1.0]);
//! assert_eq!(taps(2, 4, 0), (0, 1, 1.0, 0.0));
//! ```

/// The two input pixels and their weights for output pixel `o` of a side
/// resized from `n_in` to `n_out`: `(i0, i1, w0, w1)`.
pub fn taps(n_in: usize, n_out: usize, o: usize) -> (usize, usize, f32, f32) {
    let scale = n_in as f32 / n_out as f32;
    let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (libm::floorf(src) as usize).min(n_in - 1);
    let l = (src - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
    (i0, i1, 1.0 - l, l)
}

/// Resizes `c` planes of `h x w` in `x` to `oh x ow` in `y` (row-major,
/// plane after plane).
///
/// # Panics
/// If a slice is shorter than its planes.
pub fn forward(x: &[f32], c: usize, h: usize, w: usize, y: &mut [f32], oh: usize, ow: usize) {
    for ch in 0..c {
        let xp = &x[ch * h * w..(ch + 1) * h * w];
        let yp = &mut y[ch * oh * ow..(ch + 1) * oh * ow];
        for oy in 0..oh {
            let (y0, y1, wy0, wy1) = taps(h, oh, oy);
            for ox in 0..ow {
                let (x0, x1, wx0, wx1) = taps(w, ow, ox);
                let top = wx0 * xp[y0 * w + x0] + wx1 * xp[y0 * w + x1];
                let bottom = wx0 * xp[y1 * w + x0] + wx1 * xp[y1 * w + x1];
                yp[oy * ow + ox] = wy0 * top + wy1 * bottom;
            }
        }
    }
}

/// The gradient of [`forward`]: `dx` (zeroed here) receives each output
/// gradient times the weights of its four taps, output pixels in row-major
/// order.
///
/// # Panics
/// If a slice is shorter than its planes.
pub fn backward(dy: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize, dx: &mut [f32]) {
    dx[..c * h * w].fill(0.0);
    for ch in 0..c {
        let gp = &dy[ch * oh * ow..(ch + 1) * oh * ow];
        let dp = &mut dx[ch * h * w..(ch + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, wy0, wy1) = taps(h, oh, oy);
            for ox in 0..ow {
                let (x0, x1, wx0, wx1) = taps(w, ow, ox);
                let g = gp[oy * ow + ox];
                dp[y0 * w + x0] += wy0 * wx0 * g;
                dp[y0 * w + x1] += wy0 * wx1 * g;
                dp[y1 * w + x0] += wy1 * wx0 * g;
                dp[y1 * w + x1] += wy1 * wx1 * g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity_and_weights_sum_to_one() {
        let x: [f32; 12] = core::array::from_fn(|i| i as f32 * 0.37 - 1.0);
        let mut y = [0.0; 12];
        forward(&x, 1, 3, 4, &mut y, 3, 4);
        assert_eq!(x, y);
        for (n_in, n_out) in [(28, 224), (28, 32), (5, 3), (1, 7)] {
            for o in 0..n_out {
                let (i0, i1, w0, w1) = taps(n_in, n_out, o);
                assert!(i0 <= i1 && i1 < n_in);
                assert!((w0 + w1 - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn backward_is_the_transpose_of_forward() {
        // <forward(x), g> == <x, backward(g)> for any x, g.
        let (c, h, w, oh, ow) = (2, 5, 4, 9, 7);
        let x: [f32; 40] = core::array::from_fn(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5);
        let g: [f32; 126] = core::array::from_fn(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5);
        let mut y = [0.0f32; 126];
        forward(&x, c, h, w, &mut y, oh, ow);
        let mut dx = [0.0f32; 40];
        backward(&g, c, h, w, oh, ow, &mut dx);
        let a: f32 = y.iter().zip(&g).map(|(a, b)| a * b).sum();
        let b: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        assert!((a - b).abs() < 1e-4, "{a} {b}");
    }
}
