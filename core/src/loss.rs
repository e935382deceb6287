//! Loss functions and their gradients.
//!
//! Plain CPU reference with PyTorch's definitions. Every loss returns the
//! loss of one sample (or of one flat slice); every backward *accumulates*
//! `scale * dL/dinput` into its gradient (`+=`). `scale` is the upstream
//! gradient of the loss: `1.0` for one sample, `1.0 / N` to get the gradient
//! of a batch mean one sample at a time.
//!
//! # Examples
//!
//! ```
//! use lenet_core::loss::{cross_entropy, cross_entropy_backward};
//! let logits = [2.0f32, 0.5, -1.0]; // (N classes)
//! let l = cross_entropy(&logits, 0);
//! assert!((l - 0.2413).abs() < 1e-4);
//! let mut dlogits = [0.0f32; 3];
//! cross_entropy_backward(&mut dlogits, &logits, 0, 1.0);
//! // softmax - onehot: the target's entry is negative, the rest positive
//! assert!(dlogits[0] < 0.0 && dlogits[1] > 0.0 && dlogits[2] > 0.0);
//! assert!(dlogits.iter().sum::<f32>().abs() < 1e-6);
//! ```

use crate::activation::softmax;
use crate::math;

/// Cross entropy of raw logits against a class index (PyTorch
/// `F.cross_entropy(logits, target)` for one sample):
/// `L = -log softmax(z)[t] = logsumexp(z) - z[t]`,
/// with `logsumexp(z) = m + ln sum_j e^(z[j] - m)`, `m = max_j z[j]`, so no
/// exponent overflows.
///
/// # Panics
///
/// If `target >= N`.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::cross_entropy;
/// // Uniform logits: ln N, even for huge values.
/// let l = cross_entropy(&[1e30f32; 4], 2);
/// assert!((l - 4f32.ln()).abs() < 1e-6);
/// ```
pub fn cross_entropy<const N: usize>(logits: &[f32; N], target: usize) -> f32 {
    assert!(
        target < N,
        "cross_entropy: target {target} out of range for {N} classes"
    );
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&z| math::exp(z - m)).sum();
    (m - logits[target]) + math::ln(sum)
}

/// Backward of [`cross_entropy`]: `dlogits[j] += scale * (softmax(z)[j] - [j == t])`.
///
/// # Panics
///
/// If `target >= N`.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::cross_entropy_backward;
/// let mut d = [0.0f32; 2];
/// cross_entropy_backward(&mut d, &[0.0, 0.0], 1, 0.5); // softmax = [0.5, 0.5]
/// assert_eq!(d, [0.25, -0.25]);
/// ```
pub fn cross_entropy_backward<const N: usize>(
    dlogits: &mut [f32; N], // (N)
    logits: &[f32; N],      // (N)
    target: usize,
    scale: f32,
) {
    assert!(
        target < N,
        "cross_entropy_backward: target {target} out of range for {N} classes"
    );
    // dL/dz[j] = softmax(z)[j] - [j == t]
    let mut p = [0.0f32; N];
    softmax(&mut p, logits);
    p[target] -= 1.0;
    for (d, &pj) in dlogits.iter_mut().zip(&p) {
        *d += scale * pj;
    }
}

/// Mean squared error (PyTorch `F.mse_loss`, reduction `mean`):
/// `L = (1/n) sum_i (p[i] - t[i])^2`. NaN for empty slices, as PyTorch.
///
/// # Panics
///
/// If `pred` and `target` differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::mse;
/// assert_eq!(mse(&[1.0, 2.0], &[0.0, 0.0]), 2.5);
/// ```
pub fn mse(pred: &[f32], target: &[f32]) -> f32 {
    sum_squares(pred, target) / pred.len() as f32
}

/// Backward of [`mse`]: `dpred[i] += scale * 2 (p[i] - t[i]) / n`.
///
/// # Panics
///
/// If the slices differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::mse_backward;
/// let mut d = [0.0f32; 2];
/// mse_backward(&mut d, &[1.0, 2.0], &[0.0, 0.0], 1.0);
/// assert_eq!(d, [1.0, 2.0]);
/// ```
pub fn mse_backward(dpred: &mut [f32], pred: &[f32], target: &[f32], scale: f32) {
    let n = pred.len() as f32;
    sum_squares_backward(dpred, pred, target, scale / n);
}

/// Sum of squared errors, `L = sum_i (p[i] - t[i])^2`: the loss of d2l's
/// "learning a kernel" example (`l = (Y_hat - Y) ** 2; l.sum().backward()`).
/// Note: no factor `1/2`.
///
/// # Panics
///
/// If `pred` and `target` differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::sum_squares;
/// assert_eq!(sum_squares(&[1.0, 2.0], &[0.0, 0.0]), 5.0);
/// ```
pub fn sum_squares(pred: &[f32], target: &[f32]) -> f32 {
    assert_eq!(
        pred.len(),
        target.len(),
        "loss: pred and target differ in length"
    );
    pred.iter()
        .zip(target)
        .map(|(&p, &t)| (p - t) * (p - t))
        .sum()
}

/// Backward of [`sum_squares`]: `dpred[i] += scale * 2 (p[i] - t[i])`.
///
/// # Panics
///
/// If the slices differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::sum_squares_backward;
/// let mut d = [1.0f32; 2];
/// sum_squares_backward(&mut d, &[1.0, 2.0], &[0.0, 0.0], 1.0);
/// assert_eq!(d, [3.0, 5.0]);
/// ```
pub fn sum_squares_backward(dpred: &mut [f32], pred: &[f32], target: &[f32], scale: f32) {
    assert_eq!(
        pred.len(),
        target.len(),
        "loss: pred and target differ in length"
    );
    assert_eq!(
        dpred.len(),
        pred.len(),
        "loss: dpred and pred differ in length"
    );
    // dL/dp[i] = 2 (p[i] - t[i])
    for ((d, &p), &t) in dpred.iter_mut().zip(pred).zip(target) {
        *d += scale * 2.0 * (p - t);
    }
}

/// Binary cross entropy of probabilities (PyTorch `nn.BCELoss`, reduction
/// `mean`): `L = -(1/n) sum_i [t ln p + (1 - t) ln(1 - p)]`, with each
/// logarithm clamped to be `>= -100` as PyTorch does, so `p = 0` or `p = 1`
/// gives a finite loss.
///
/// # Panics
///
/// If `p` and `t` differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::binary_cross_entropy;
/// let l = binary_cross_entropy(&[0.5, 0.0], &[1.0, 1.0]);
/// assert!((l - (2f32.ln() + 100.0) / 2.0).abs() < 1e-5);
/// ```
pub fn binary_cross_entropy(p: &[f32], t: &[f32]) -> f32 {
    assert_eq!(p.len(), t.len(), "loss: p and t differ in length");
    let mut sum = 0.0f32;
    for (&pi, &ti) in p.iter().zip(t) {
        let log_p = math::ln(pi).max(-100.0);
        let log_1mp = math::ln(1.0 - pi).max(-100.0);
        sum -= ti * log_p + (1.0 - ti) * log_1mp;
    }
    sum / p.len() as f32
}

/// Backward of [`binary_cross_entropy`], as PyTorch computes it:
/// `dp[i] += scale * (p - t) / max(p (1 - p), 1e-12) / n`
/// (the clamp keeps the gradient finite at `p = 0` and `p = 1`).
///
/// # Panics
///
/// If the slices differ in length.
///
/// # Examples
///
/// ```
/// use lenet_core::loss::binary_cross_entropy_backward;
/// let mut d = [0.0f32];
/// binary_cross_entropy_backward(&mut d, &[0.25], &[1.0], 1.0);
/// assert!((d[0] + 4.0).abs() < 1e-6); // -1/p
/// ```
pub fn binary_cross_entropy_backward(dp: &mut [f32], p: &[f32], t: &[f32], scale: f32) {
    assert_eq!(p.len(), t.len(), "loss: p and t differ in length");
    assert_eq!(dp.len(), p.len(), "loss: dp and p differ in length");
    let n = p.len() as f32;
    // dL/dp = (p - t) / (p (1 - p)) / n
    for ((d, &pi), &ti) in dp.iter_mut().zip(p).zip(t) {
        *d += scale * (pi - ti) / (pi * (1.0 - pi)).max(1e-12) / n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ce_f64(z: &[f32], t: usize) -> f64 {
        let s: f64 = z.iter().map(|&v| (v as f64).exp()).sum();
        s.ln() - z[t] as f64
    }

    #[test]
    fn cross_entropy_matches_f64_reference() {
        let z = [0.3f32, -1.2, 2.5, 0.0, 1.1];
        for t in 0..5 {
            // ln of a sum of exps: an exp error of r moves the loss by about r
            let tol = 1e-6 + crate::math::EXP_RTOL;
            assert!((cross_entropy(&z, t) as f64 - ce_f64(&z, t)).abs() < tol);
        }
        // Large logits: stable, no inf/NaN.
        let big = [1000.0f32, 0.0, -1000.0];
        assert_eq!(cross_entropy(&big, 0), 0.0);
        assert!((cross_entropy(&big, 1) - 1000.0).abs() < 1e-3);
        let mut d = [0.0f32; 3];
        cross_entropy_backward(&mut d, &big, 2, 1.0);
        assert!(d.iter().all(|v| v.is_finite()));
    }

    /// Checks `backward(scale)` against central differences of `scale * L`
    /// at `x`, starting from a non-zero gradient to check accumulation.
    fn check_grad<const N: usize>(
        x: [f32; N],
        loss: impl Fn(&[f32; N]) -> f32,
        backward: impl Fn(&mut [f32; N], &[f32; N], f32),
        h: f32,
    ) {
        let scale = 0.37f32;
        let mut d = [0.5f32; N];
        backward(&mut d, &x, scale);
        for i in 0..N {
            let (mut xp, mut xm) = (x, x);
            xp[i] += h;
            xm[i] -= h;
            let num = scale as f64 * (loss(&xp) as f64 - loss(&xm) as f64) / (2.0 * h as f64);
            let got = d[i] as f64 - 0.5;
            assert!(
                (got - num).abs() <= 1e-3 + 1e-2 * num.abs(),
                "i={i}: analytic {got}, numeric {num}"
            );
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let z = [0.3f32, -1.2, 2.5, 0.0, 1.1];
        check_grad(
            z,
            |z| cross_entropy(z, 3),
            |d, z, s| cross_entropy_backward(d, z, 3, s),
            1e-2,
        );
        let t = [0.5f32, 1.0, -2.0, 0.0, 0.25];
        check_grad(z, |p| mse(p, &t), |d, p, s| mse_backward(d, p, &t, s), 1e-2);
        check_grad(
            z,
            |p| sum_squares(p, &t),
            |d, p, s| sum_squares_backward(d, p, &t, s),
            1e-2,
        );
        let p = [0.1f32, 0.4, 0.5, 0.8, 0.95];
        let tb = [0.0f32, 1.0, 0.3, 1.0, 0.0];
        check_grad(
            p,
            |p| binary_cross_entropy(p, &tb),
            |d, p, s| binary_cross_entropy_backward(d, p, &tb, s),
            1e-3,
        );
    }

    #[test]
    fn regression_losses_values() {
        let p = [1.0f32, -1.0, 3.0];
        let t = [0.0f32, 1.0, 3.0];
        assert_eq!(sum_squares(&p, &t), 5.0);
        assert!((mse(&p, &t) - 5.0 / 3.0).abs() < 1e-6);
        assert!(mse(&[], &[]).is_nan());
    }

    #[test]
    fn bce_clamps_like_pytorch() {
        // p = 0 with t = 1 and p = 1 with t = 0 each cost exactly 100.
        assert_eq!(binary_cross_entropy(&[0.0, 1.0], &[1.0, 0.0]), 100.0);
        // Perfect predictions cost 0 (0 * -100 is 0, not NaN).
        assert_eq!(binary_cross_entropy(&[0.0, 1.0], &[0.0, 1.0]), 0.0);
        let mut d = [0.0f32; 2];
        binary_cross_entropy_backward(&mut d, &[0.0, 1.0], &[1.0, 0.0], 1.0);
        assert!(d.iter().all(|v| v.is_finite()));
        assert!(d[0] < 0.0 && d[1] > 0.0);
        let l = binary_cross_entropy(&[0.2, 0.9], &[0.0, 1.0]) as f64;
        let want = -((0.8f64).ln() + (0.9f64).ln()) / 2.0;
        assert!((l - want).abs() < 1e-6);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn cross_entropy_rejects_bad_target() {
        cross_entropy(&[0.0f32; 3], 3);
    }
}
