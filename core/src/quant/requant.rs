//! Fixed-point requantization: `round(acc * M)` with `M = multiplier * 2^(shift - 31)`.
//!
//! An int32 accumulator is brought back to int8 by a real factor `M`
//! (`s_in * s_w / s_out`), stored as a Q31 multiplier in `[2^30, 2^31)` and a
//! power-of-two exponent `shift` (positive: left shift, negative: right
//! shift), exactly as TFLite stores it. The product is computed in two
//! rounding steps (the *double rounding* variant):
//!
//! 1. [`saturating_rounding_doubling_high_mul`]: the high 32 bits of
//!    `2 * a * b`, rounded to nearest with ties towards `+inf` (what ARM's
//!    `SQRDMULH` computes; gemmlowp and CMSIS-NN write it as a nudge of
//!    `2^30` or `1 - 2^30` by the product's sign and a division truncating
//!    towards zero, which gives the same ties);
//! 2. [`rounding_divide_by_pot`]: an arithmetic shift right rounding to
//!    nearest with ties away from zero.
//!
//! See the parent module docs for why this variant was chosen.

/// `round(a * b / 2^31)` to nearest, ties towards `+inf` (`-0.5 -> 0`,
/// `0.5 -> 1`), saturated to `i32`.
///
/// The only product that overflows is `i32::MIN * i32::MIN` (`+1.0` in Q31),
/// which saturates to `i32::MAX`.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::saturating_rounding_doubling_high_mul as srdhm;
/// // 0.5 * 0.5 = 0.25 in Q31.
/// assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29);
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// ```
#[inline]
pub const fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    // Nudge by half an output unit towards the product's sign (one less
    // than half for negative products), then divide truncating towards
    // zero: round to nearest, ties towards +inf.
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `round(x / 2^exponent)`, rounding half away from zero (`exponent` in
/// `0..=31`).
///
/// # Panics
///
/// Panics if `exponent > 31`.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::rounding_divide_by_pot;
/// assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
/// assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
/// assert_eq!(rounding_divide_by_pot(-7, 2), -2); // -1.75 -> -2
/// ```
#[inline]
pub const fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    assert!(exponent <= 31, "rounding_divide_by_pot: exponent > 31");
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    // Round up when the dropped bits exceed one half; for negative x the
    // half itself also rounds towards minus infinity (away from zero).
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// `round(x * multiplier * 2^(shift - 31))` in the TFLM/CMSIS-NN double
/// rounding form: `rounding_divide_by_pot(srdhm(x << max(shift, 0),
/// multiplier), max(-shift, 0))`.
///
/// `multiplier` is Q31 (normally in `[2^30, 2^31)`, 0 for a zero scale),
/// `shift` in `-31..=30`. The left shift of `x` (only for `M >= 1`, which
/// [`quantize_multiplier`] produces for ratios above one) saturates instead
/// of wrapping; the quantizer in this crate never produces a left shift
/// large enough for that to matter (the int8 output saturates first).
///
/// # Examples
///
/// ```
/// use lenet_core::quant::{multiply_by_quantized_multiplier, quantize_multiplier};
/// let (m, s) = quantize_multiplier(0.25).unwrap();
/// assert_eq!(multiply_by_quantized_multiplier(10, m, s), 3); // 2.5 -> 3
/// assert_eq!(multiply_by_quantized_multiplier(-10, m, s), -3); // -2.5 -> -3
/// ```
#[inline]
pub const fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = if shift > 0 { shift as u32 } else { 0 };
    let right = if shift > 0 { 0 } else { shift.unsigned_abs() };
    let shifted = x.saturating_mul(1 << left);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, multiplier),
        right,
    )
}

/// Requantize an int32 accumulator to int8: `clamp(mbqm(acc) + zero_point,
/// -128, 127)`.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::{quantize_multiplier, requantize};
/// let (m, s) = quantize_multiplier(0.01).unwrap();
/// assert_eq!(requantize(1000, m, s, -5), 5);
/// assert_eq!(requantize(1_000_000, m, s, 0), 127);
/// ```
#[inline]
pub const fn requantize(acc: i32, multiplier: i32, shift: i32, zero_point: i32) -> i8 {
    let v = multiply_by_quantized_multiplier(acc, multiplier, shift).saturating_add(zero_point);
    if v < -128 {
        -128
    } else if v > 127 {
        127
    } else {
        v as i8
    }
}

/// Split a non-negative real factor into a Q31 multiplier and a shift so
/// that `real ≈ multiplier * 2^(shift - 31)` (TFLite `QuantizeMultiplier`).
///
/// The fraction in `[0.5, 1)` is rounded half away from zero to 31 bits; a
/// fraction that rounds up to `2^31` is halved with the exponent raised.
/// Factors below `2^-32` become `(0, 0)` (the product is always 0).
///
/// Returns `None` for a negative, NaN or infinite factor, or one of `2^30`
/// or more (shift above 30). Run at quantization time only; the results are
/// stored in the model.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::quantize_multiplier;
/// assert_eq!(quantize_multiplier(0.5), Some((1 << 30, 0)));
/// assert_eq!(quantize_multiplier(0.75), Some((3 << 29, 0)));
/// assert_eq!(quantize_multiplier(3.0), Some((3 << 29, 2)));
/// assert_eq!(quantize_multiplier(0.0), Some((0, 0)));
/// ```
pub fn quantize_multiplier(real: f64) -> Option<(i32, i32)> {
    if !real.is_finite() || real < 0.0 {
        return None;
    }
    if real == 0.0 {
        return Some((0, 0));
    }
    // frexp: real = fraction * 2^exp with fraction in [0.5, 1). Scaling by
    // powers of two is exact in binary floating point.
    let mut fraction = real;
    let mut exp: i32 = 0;
    while fraction >= 1.0 {
        fraction *= 0.5;
        exp += 1;
    }
    while fraction < 0.5 {
        fraction *= 2.0;
        exp -= 1;
        if exp < -64 {
            return Some((0, 0));
        }
    }
    let mut q = libm::round(fraction * (1u64 << 31) as f64) as i64;
    if q == 1i64 << 31 {
        q /= 2;
        exp += 1;
    }
    if exp < -31 {
        return Some((0, 0));
    }
    if exp > 30 {
        return None;
    }
    Some((q as i32, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact reference in i128 with the two roundings spelled out: the high
    /// multiply rounds ties up (floor(p + 1/2)), the shift rounds ties away
    /// from zero.
    fn reference(x: i32, m: i32, shift: i32) -> i32 {
        let left = shift.max(0);
        let right = (-shift).max(0);
        let xs = (i64::from(x) << left).clamp(i32::MIN.into(), i32::MAX.into());
        let p = i128::from(xs) * i128::from(m) * 2;
        let hi = (p + (1i128 << 31)).div_euclid(1i128 << 32);
        let hi = hi.clamp(i32::MIN.into(), i32::MAX.into());
        round_div(hi, 1i128 << right) as i32
    }

    /// Division rounding half away from zero.
    fn round_div(n: i128, d: i128) -> i128 {
        let q = n / d;
        let r = n % d;
        if 2 * r.abs() >= d { q + n.signum() } else { q }
    }

    #[test]
    fn srdhm_rounds_ties_up() {
        // 1 * 2^30 / 2^31 = 0.5 -> 1 ; -0.5 -> 0 (ties towards +inf).
        assert_eq!(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, -1), 0);
        // 0.25 rounds to 0 either sign.
        assert_eq!(saturating_rounding_doubling_high_mul(1, 1 << 29), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, 1 << 29), 0);
        // 0.75 -> 1, -0.75 -> -1.
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 29), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 29), -1);
        // 1.5 -> 2, -1.5 -> -1, -2.5 -> -2; -1.50000000047 -> -2.
        assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        assert_eq!(saturating_rounding_doubling_high_mul(-5, 1 << 30), -2);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, (1 << 30) + 1), -2);
    }

    #[test]
    fn srdhm_saturates_only_at_min_times_min() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, -i32::MAX),
            i32::MAX
        );
    }

    #[test]
    fn rounding_divide_ties_and_negatives() {
        let cases = [
            (0, 3, 0),
            (4, 3, 1),   // 0.5 -> 1
            (-4, 3, -1), // -0.5 -> -1
            (3, 3, 0),   // 0.375 -> 0
            (-3, 3, 0),
            (5, 3, 1), // 0.625 -> 1
            (-5, 3, -1),
            (12, 3, 2), // 1.5 -> 2
            (-12, 3, -2),
            (-13, 3, -2), // -1.625 -> -2
            (-11, 3, -1), // -1.375 -> -1
            (7, 0, 7),
            (-7, 0, -7),
            (i32::MAX, 31, 1),    // ~1.0 -> 1
            (i32::MIN, 31, -1),   // -1.0
            (-(1 << 30), 31, -1), // -0.5 -> -1
            ((1 << 30) - 1, 31, 0),
        ];
        for (x, e, want) in cases {
            assert_eq!(rounding_divide_by_pot(x, e), want, "x={x} e={e}");
        }
    }

    #[test]
    fn mbqm_matches_exact_reference() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let r = next();
            let shift = ((next() % 40) as i32 - 31).min(8);
            let (x, m) = match r % 5 {
                0 => ((r >> 8) as i32, 0),
                1 => (((r >> 8) as i32) >> 12, 0),
                2 => (((r >> 8) as i32 % 64) - 32, 0),
                3 => ([i32::MIN, i32::MAX, 0, 1, -1][(r >> 8) as usize % 5], 0),
                // Multiplier 0.5 and x an odd multiple of 2^right: the high
                // multiply is exact and the shift sees an exact tie.
                _ => {
                    let right = (-shift).clamp(0, 20);
                    let k = ((r >> 8) as i32) >> 22;
                    (((k << 1) | 1) << right, 1 << 30)
                }
            };
            let m = if m != 0 {
                m
            } else {
                (1 << 30) | ((next() as i32) & 0x3fff_ffff)
            };
            assert_eq!(
                multiply_by_quantized_multiplier(x, m, shift),
                reference(x, m, shift),
                "x={x} m={m} shift={shift}"
            );
        }
    }

    #[test]
    fn mbqm_saturates_large_left_shifts() {
        let (m, s) = quantize_multiplier(1024.0).unwrap();
        assert_eq!(s, 11);
        // 2^25 << 11 saturates to i32::MAX before the Q31 0.5 is applied.
        assert_eq!(multiply_by_quantized_multiplier(1 << 25, m, s), 1 << 30);
        assert_eq!(
            multiply_by_quantized_multiplier(-(1 << 25), m, s),
            -(1 << 30)
        );
        assert_eq!(requantize(1 << 25, m, s, 0), 127);
        assert_eq!(requantize(-(1 << 25), m, s, 0), -128);
    }

    #[test]
    fn requantize_adds_zero_point_and_clamps() {
        let (m, s) = quantize_multiplier(0.5).unwrap();
        assert_eq!(requantize(3, m, s, 0), 2); // 1.5 -> 2
        // -1.5 -> -1: the tie is decided in the high multiply (ties up).
        assert_eq!(requantize(-3, m, s, 0), -1);
        assert_eq!(requantize(-3, m, s, 10), 9);
        // With a right shift the tie is decided in the shift (away from 0):
        // 0.25 = 2^30 * 2^(-1-31); -6 * 0.25 = -1.5 -> -2.
        let (m4, s4) = quantize_multiplier(0.25).unwrap();
        assert_eq!(requantize(-6, m4, s4, 0), -2);
        assert_eq!(requantize(6, m4, s4, 0), 2);
        assert_eq!(requantize(-10, m4, s4, 0), -3);
        assert_eq!(requantize(300, m, s, -30), 120);
        assert_eq!(requantize(300, m, s, 0), 127);
        assert_eq!(requantize(-300, m, s, 0), -128);
        assert_eq!(requantize(i32::MIN, m, s, 127), -128);
        assert_eq!(requantize(i32::MAX, m, s, -128), 127);
    }

    #[test]
    fn quantize_multiplier_reconstructs_factor() {
        for &real in &[
            1e-9, 3.7e-5, 0.001, 0.0123, 0.3, 0.49999, 0.5, 0.99999, 1.0, 1.7, 100.0,
        ] {
            let (m, s) = quantize_multiplier(real).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&m), "real={real} m={m}");
            let back = f64::from(m) * 2f64.powi(s - 31);
            assert!(
                ((back - real) / real).abs() < 1e-9,
                "real={real} back={back}"
            );
        }
        // A fraction that rounds up to 2^31 moves to the next exponent.
        let almost_one = 1.0 - 2f64.powi(-40);
        assert_eq!(quantize_multiplier(almost_one), Some((1 << 30, 1)));
        assert_eq!(quantize_multiplier(2f64.powi(-40)), Some((0, 0)));
        assert_eq!(quantize_multiplier(-1.0), None);
        assert_eq!(quantize_multiplier(f64::NAN), None);
        assert_eq!(quantize_multiplier(2f64.powi(31)), None);
    }
}
