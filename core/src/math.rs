//! `f32` math functions for `no_std`: thin wrappers over [`libm`].
//!
//! `core` has no `f32::exp` and friends without `std`, so every numeric
//! routine in this crate calls these wrappers instead. They are the single
//! place where the crate picks a math back end:
//!
//! - by default every function is `libm`'s correctly rounded-or-close port
//!   of musl (the same results on the workstation and on the Cortex-M4);
//! - with the `micromath` feature, [`exp`] (and only `exp`) switches to
//!   micromath's fast approximation (range reduction by `ln 2`, then a
//!   4-term series), which is smaller and faster on an FPU-only core.
//!
//! # Accuracy cost of the `micromath` feature
//!
//! Measured by the test `micromath_accuracy` (run with
//! `cargo test -p lenet-core --features micromath -- --nocapture`) on
//! 400 001 evenly spaced points, compared with `libm::expf`:
//!
//! | quantity                                          | max error                |
//! |---------------------------------------------------|--------------------------|
//! | relative error of `exp(x)`, `x` in \[-20, 20\]    | 2.39e-3 (0.24 %)         |
//! | absolute error of `sigmoid(x)`, `x` in \[-20, 20\]| 5.30e-4                  |
//! | relative error of `sigmoid(x)`, `x` in \[-20, 20\]| 2.39e-3                  |
//!
//! (`sigmoid` in the stable form of [`crate::activation::sigmoid`].) That is
//! about 8 to 9 significant bits: a small perturbation next to int8
//! quantisation, but far coarser than `f32` agreement with PyTorch, which is
//! why `libm` is the default and float comparisons against PyTorch should run
//! without the feature.

/// `e^x`.
///
/// `libm::expf` by default; micromath's approximation (max relative error
/// about 2.4e-3, see the module docs) with the `micromath` feature.
///
/// # Examples
///
/// ```
/// let e = lenet_core::math::exp(1.0);
/// assert!((e - core::f32::consts::E).abs() < 1e-2);
/// ```
#[inline]
pub fn exp(x: f32) -> f32 {
    #[cfg(feature = "micromath")]
    {
        <f32 as micromath::F32Ext>::exp(x)
    }
    #[cfg(not(feature = "micromath"))]
    {
        libm::expf(x)
    }
}

/// Natural logarithm `ln x` (`-inf` at 0, NaN for `x < 0`).
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::math::ln(1.0), 0.0);
/// assert_eq!(lenet_core::math::ln(0.0), f32::NEG_INFINITY);
/// ```
#[inline]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// Square root `sqrt x` (NaN for `x < 0`).
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::math::sqrt(9.0), 3.0);
/// ```
#[inline]
pub fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
}

/// Hyperbolic tangent `tanh x = (e^x - e^-x) / (e^x + e^-x)`.
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::math::tanh(0.0), 0.0);
/// assert_eq!(lenet_core::math::tanh(50.0), 1.0);
/// ```
#[inline]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// `x^y` for a real exponent.
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::math::powf(2.0, 10.0), 1024.0);
/// ```
#[inline]
pub fn powf(x: f32, y: f32) -> f32 {
    libm::powf(x, y)
}

/// `x^n` for an integer exponent, by repeated squaring (exact for small
/// integer results; `x^0 = 1`, negative `n` gives `1 / x^|n|`).
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::math::powi(0.5, 3), 0.125);
/// assert_eq!(lenet_core::math::powi(2.0, -2), 0.25);
/// ```
#[inline]
pub fn powi(x: f32, n: i32) -> f32 {
    let mut base = x;
    let mut e = n.unsigned_abs();
    let mut acc = 1.0f32;
    while e > 0 {
        if e & 1 == 1 {
            acc *= base;
        }
        base *= base;
        e >>= 1;
    }
    if n < 0 { 1.0 / acc } else { acc }
}

/// Relative error of [`exp`] that tests elsewhere allow for: 0 with libm
/// (they keep their own tight tolerances), the measured 2.39e-3, rounded
/// up, with the `micromath` feature.
#[cfg(test)]
pub(crate) const EXP_RTOL: f64 = if cfg!(feature = "micromath") {
    2.5e-3
} else {
    0.0
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_match_std() {
        for i in -40..=40 {
            let x = i as f32 * 0.37;
            assert!((tanh(x) - x.tanh()).abs() <= 1e-6, "tanh({x})");
            if x > 0.0 {
                assert!((ln(x) - x.ln()).abs() <= 1e-6 * x.ln().abs().max(1.0));
                assert!((sqrt(x) - x.sqrt()).abs() <= 1e-6 * x.sqrt());
                assert!((powf(x, 1.7) - x.powf(1.7)).abs() <= 1e-5 * x.powf(1.7));
            }
            #[cfg(not(feature = "micromath"))]
            assert!((exp(x) - x.exp()).abs() <= 1e-6 * x.exp(), "exp({x})");
        }
    }

    #[test]
    fn powi_matches_repeated_multiplication() {
        for n in -6i32..=10 {
            for &x in &[0.9f32, 0.999, 1.5, -2.0] {
                let mut want = 1.0f64;
                for _ in 0..n.unsigned_abs() {
                    want *= x as f64;
                }
                if n < 0 {
                    want = 1.0 / want;
                }
                let got = powi(x, n) as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs(),
                    "{x}^{n}: {got} vs {want}"
                );
            }
        }
    }

    /// Measures what the `micromath` feature costs; the numbers go in the
    /// module docs. Fails if the approximation gets worse than documented.
    #[cfg(feature = "micromath")]
    #[test]
    fn micromath_accuracy() {
        // The stable form used by `activation::sigmoid`.
        let sig = |x: f32, exp: fn(f32) -> f32| {
            if x >= 0.0 {
                1.0 / (1.0 + exp(-x))
            } else {
                let e = exp(x);
                e / (1.0 + e)
            }
        };
        let (mut exp_rel, mut sig_abs, mut sig_rel) = (0.0f64, 0.0f64, 0.0f64);
        let n = 400_000;
        for i in 0..=n {
            let x = -20.0 + 40.0 * i as f32 / n as f32;
            let want = libm::expf(x) as f64;
            let got = exp(x) as f64;
            exp_rel = exp_rel.max(((got - want) / want).abs());
            let s_want = sig(x, libm::expf) as f64;
            let s_got = sig(x, exp) as f64;
            sig_abs = sig_abs.max((s_got - s_want).abs());
            sig_rel = sig_rel.max(((s_got - s_want) / s_want).abs());
        }
        std::println!("micromath exp: max rel err {exp_rel:.3e} on [-20, 20]");
        std::println!(
            "sigmoid via micromath exp: max abs err {sig_abs:.3e}, max rel err {sig_rel:.3e}"
        );
        assert!(exp_rel < 2.5e-3 && sig_abs < 6e-4 && sig_rel < 2.5e-3);
    }
}
