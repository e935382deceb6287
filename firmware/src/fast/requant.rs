//! Requantization and activation tables in the kernels' forms.

use super::dsp::{asr, shl, smmlar, ssat8};

/// One channel's requantization, `lenet_core::quant::requantize`, in a
/// shorter exact form, for a doubled accumulator `acc2 = 2 * acc` with
/// `|acc| <= 2^29` and a right shift `e = -shift` in `1..=22` (`build.rs`
/// checks both for every channel, else it builds the reference instead):
///
/// - the Q31 product `srdhm(acc, m)` is `floor((acc * m + 2^30) / 2^31)`
///   (lenet-core's nudge-and-truncate is that floor for either sign; its
///   one saturating case needs a negative multiplier, which the format
///   rejects), which is `SMMULR(acc2, m)`;
/// - `rounding_divide_by_pot(x, e)` (half away from zero) is
///   `(x + 2^(e-1) - [x < 0]) >> e`, and `[x < 0]` may be `[acc < 0]`
///   (they differ only for `x = 0`, which gives 0 either way);
/// - adding the zero point before the shift as `zp << e` is exact, so
///   `SMMLAR(acc2, m, 2^(e-1) + (zp << e))`, plus `acc2 >> 31`, shifted
///   right by `e` and saturated to int8 is `requantize(acc, m, shift, zp)`.
#[derive(Clone, Copy)]
pub(super) struct Requant {
    m: i32,
    c: i32,
    e: u32,
}

impl Requant {
    /// The constants of multiplier `m`, right shift `e` (`-shift`) and
    /// zero point `zp`.
    #[inline(always)]
    pub(super) fn new(m: i32, e: u8, zp: i32) -> Self {
        let e = u32::from(e);
        Self {
            m,
            // 2^(e-1) + (zp << e), as (2 zp + 1) << e >> 1.
            c: shl(2 * zp + 1, e) >> 1,
            e,
        }
    }

    /// `requantize(acc2 / 2, m, shift, zp)`.
    #[inline(always)]
    pub(super) fn q(&self, acc2: i32) -> i32 {
        ssat8(asr(smmlar(acc2, self.m, self.c) + (acc2 >> 31), self.e))
    }
}

/// An activation table addressed by the int8 pre-activation.
#[derive(Clone, Copy)]
pub(super) struct Lut(*const i8);

impl Lut {
    #[inline(always)]
    pub(super) fn new(t: &'static [i8; 256]) -> Self {
        Self(t.as_ptr().wrapping_add(128))
    }

    /// `t[lut_index(q)]` for `q` in `-128..=127`.
    #[inline(always)]
    pub(super) fn at(self, q: i32) -> i32 {
        debug_assert!((-128..=127).contains(&q));
        // SAFETY: `q + 128` is in `0..256`, within the table.
        i32::from(unsafe { *self.0.offset(q as isize) })
    }
}
