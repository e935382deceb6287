//! A small seedable random number generator and PyTorch's default
//! parameter initialisation.
//!
//! [`Rng`] is PCG32 (PCG-XSH-RR, 64-bit state, 32-bit output, O'Neill
//! 2014): 16 bytes of state, fast on a 32-bit core, reproducible on every
//! platform. It is not cryptographic.
//!
//! # Examples
//!
//! ```
//! use lenet_core::init::{Rng, kaiming_uniform, bias_uniform};
//! let mut rng = Rng::new(42);
//! let mut w = [[0.0f32; 400]; 120]; // (O, I) of a Linear(400, 120)
//! let mut b = [0.0f32; 120];        // (O)
//! kaiming_uniform(w.as_flattened_mut(), 400, &mut rng);
//! bias_uniform(&mut b, 400, &mut rng);
//! assert!(w.as_flattened().iter().all(|v| v.abs() <= 0.05)); // 1/sqrt(400)
//! ```

use crate::math;

/// PCG32 random number generator (PCG-XSH-RR 64/32).
///
/// # Examples
///
/// ```
/// use lenet_core::init::Rng;
/// static SEEDED: Rng = Rng::new(7); // const: usable in statics
/// let mut rng = SEEDED.clone();
/// let x = rng.next_f32();
/// assert!((0.0..1.0).contains(&x));
/// let mut again = Rng::new(7);
/// assert_eq!(again.next_f32(), x); // same seed, same stream
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
    inc: u64,
}

const PCG_MULT: u64 = 6_364_136_223_846_793_005;
/// PCG's default stream (`inc = 1442695040888963407`).
const DEFAULT_STREAM: u64 = 721_347_520_444_481_703;

impl Rng {
    /// A generator seeded with `seed` on PCG's default stream.
    pub const fn new(seed: u64) -> Self {
        Rng::with_stream(seed, DEFAULT_STREAM)
    }

    /// A generator seeded with `seed` on stream `stream` (PCG's
    /// `pcg32_srandom(seed, stream)`): different streams give independent
    /// sequences for the same seed.
    pub const fn with_stream(seed: u64, stream: u64) -> Self {
        let mut rng = Rng {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.advance();
        rng.state = rng.state.wrapping_add(seed);
        rng.advance();
        rng
    }

    const fn advance(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// The next uniformly distributed `u32`.
    pub const fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.advance();
        // XSH RR: xorshift high bits, then a random rotation.
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// A uniform `f32` in `[0, 1)`, with 24 random bits (every value is a
    /// multiple of `2^-24`).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// A uniform `f32` in `[lo, hi)` (`lo + (hi - lo) * next_f32()`; for
    /// very wide ranges rounding can give `hi` itself).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's
    /// multiply-and-reject).
    ///
    /// # Panics
    ///
    /// If `n == 0`.
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "Rng::below: empty range");
        let threshold = n.wrapping_neg() % n; // 2^32 mod n
        loop {
            let m = self.next_u32() as u64 * n as u64;
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }

    /// A standard normal `f32` (mean 0, variance 1) by the Box-Muller
    /// transform: `sqrt(-2 ln u1) cos(2 pi u2)` with `u1` in `(0, 1]`.
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.next_f32(); // (0, 1]: ln is finite
        let u2 = self.next_f32();
        math::sqrt(-2.0 * math::ln(u1)) * libm::cosf(core::f32::consts::TAU * u2)
    }

    /// Shuffles `xs` in place, every permutation equally likely
    /// (Fisher-Yates).
    ///
    /// # Panics
    ///
    /// If `xs` has more than `u32::MAX` elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use lenet_core::init::Rng;
    /// let mut order = [0u16, 1, 2, 3, 4, 5, 6, 7];
    /// Rng::new(1).shuffle(&mut order);
    /// let mut sorted = order;
    /// sorted.sort();
    /// assert_eq!(sorted, [0, 1, 2, 3, 4, 5, 6, 7]);
    /// ```
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        assert!(
            u32::try_from(xs.len()).is_ok(),
            "Rng::shuffle: slice too long"
        );
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// Bound `1 / sqrt(fan_in)` of PyTorch's default initialisation (0 when
/// `fan_in` is 0).
fn default_bound(fan_in: usize) -> f32 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / math::sqrt(fan_in as f32)
    }
}

/// PyTorch's default weight initialisation for `Linear` and `Conv2d`,
/// `kaiming_uniform_(w, a = sqrt(5))`: every element drawn from
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
///
/// (Gain `sqrt(2 / (1 + a^2)) = sqrt(1/3)`, bound
/// `sqrt(3) * gain / sqrt(fan_in) = 1 / sqrt(fan_in)`.) `fan_in` is `I` for a
/// linear layer and `CI * KH * KW` for a convolution.
///
/// # Examples
///
/// ```
/// use lenet_core::init::{Rng, kaiming_uniform};
/// let mut w = [[[[0.0f32; 5]; 5]; 1]; 6]; // (CO, CI, KH, KW) of Conv2d(1, 6, 5)
/// kaiming_uniform(w.as_flattened_mut().as_flattened_mut().as_flattened_mut(), 25, &mut Rng::new(0));
/// let flat = w.as_flattened().as_flattened().as_flattened();
/// assert!(flat.iter().all(|v| v.abs() <= 0.2)); // 1/sqrt(25)
/// ```
pub fn kaiming_uniform(w: &mut [f32], fan_in: usize, rng: &mut Rng) {
    let bound = default_bound(fan_in);
    for v in w {
        *v = rng.uniform(-bound, bound);
    }
}

/// PyTorch's default bias initialisation for `Linear` and `Conv2d`:
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, the same bound as
/// [`kaiming_uniform`] with the weight's `fan_in`.
///
/// # Examples
///
/// ```
/// use lenet_core::init::{Rng, bias_uniform};
/// let mut b = [0.0f32; 10];
/// bias_uniform(&mut b, 84, &mut Rng::new(3));
/// assert!(b.iter().all(|v| v.abs() <= 1.0 / 84f32.sqrt()));
/// ```
pub fn bias_uniform(b: &mut [f32], fan_in: usize, rng: &mut Rng) {
    kaiming_uniform(b, fan_in, rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of the reference `pcg32-global-demo`
    /// (`pcg32_srandom(42, 54)`) from the PCG C library.
    #[test]
    fn matches_pcg32_reference_stream() {
        let mut rng = Rng::with_stream(42, 54);
        let got: [u32; 6] = core::array::from_fn(|_| rng.next_u32());
        assert_eq!(
            got,
            [
                0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e
            ]
        );
    }

    #[test]
    fn seeds_and_streams_differ() {
        let a: [u32; 4] = {
            let mut r = Rng::new(1);
            core::array::from_fn(|_| r.next_u32())
        };
        let b: [u32; 4] = {
            let mut r = Rng::new(2);
            core::array::from_fn(|_| r.next_u32())
        };
        let c: [u32; 4] = {
            let mut r = Rng::with_stream(1, 9);
            core::array::from_fn(|_| r.next_u32())
        };
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn next_f32_is_uniform_on_unit_interval() {
        let mut rng = Rng::new(123);
        let mut bins = [0u32; 10];
        let n = 100_000;
        for _ in 0..n {
            let x = rng.next_f32();
            assert!((0.0..1.0).contains(&x));
            bins[(x * 10.0) as usize] += 1;
        }
        // chi-square with 9 degrees of freedom; 27.9 is the 0.999 quantile
        let e = n as f64 / 10.0;
        let chi2: f64 = bins.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 27.9, "chi2 = {chi2}, bins {bins:?}");
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut rng = Rng::new(5);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = rng.uniform(-3.0, -1.0);
            assert!((-3.0..-1.0).contains(&x));
            seen[rng.below(7) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Rng::new(99);
        let n = 200_000;
        let (mut s1, mut s2, mut s4) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let x = rng.normal() as f64;
            assert!(x.is_finite());
            s1 += x;
            s2 += x * x;
            s4 += x * x * x * x;
        }
        let (mean, var, kurt) = (s1 / n as f64, s2 / n as f64, s4 / n as f64);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!((kurt - 3.0).abs() < 0.1, "E[x^4] {kurt}"); // 3 for a normal
    }

    #[test]
    fn shuffle_is_a_permutation_and_unbiased() {
        let mut rng = Rng::new(2024);
        // Each of the 6 permutations of 3 elements about 1/6 of the time.
        let mut counts = std::collections::HashMap::new();
        let n = 60_000;
        for _ in 0..n {
            let mut xs = [0u8, 1, 2];
            rng.shuffle(&mut xs);
            *counts.entry(xs).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 6);
        for (perm, &c) in &counts {
            assert!((c as f64 - n as f64 / 6.0).abs() < 500.0, "{perm:?}: {c}");
        }
        let mut empty: [u8; 0] = [];
        rng.shuffle(&mut empty);
    }

    #[test]
    fn kaiming_bound_is_pytorch_default() {
        let mut rng = Rng::new(0);
        let mut w = [0.0f32; 10_000];
        kaiming_uniform(&mut w, 16, &mut rng);
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max <= 0.25 && max > 0.249, "max |w| = {max}");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.01);
        // Variance of U(-b, b) is b^2 / 3.
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!((var - 0.0625 / 3.0).abs() < 1e-3, "var {var}");
        let mut b = [1.0f32; 3];
        bias_uniform(&mut b, 0, &mut rng);
        assert_eq!(b, [0.0; 3]);
    }
}
