//! The M4 instructions the kernels call from Rust, one `asm!` each
//! (the DSP intrinsics are nightly-only): register-only, no memory, no
//! stack.

use core::arch::asm;

/// `fn name(args) -> T = "template" (operands in template order) [flags]`:
/// an inlined wrapper of one instruction; `preserves_flags` where the
/// instruction sets no flags.
macro_rules! dsp {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $t:ty),*) -> $r:ty = $tmpl:literal ($($op:ident),*) $($keep:ident)?;
    )*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub(super) fn $name($($arg: $t),*) -> $r {
            let r: $r;
            // SAFETY: one register-only instruction.
            unsafe {
                asm!($tmpl, r = lateout(reg) r, $($op = in(reg) $op,)*
                     options(pure, nomem, nostack $(, $keep)?));
            }
            r
        }
    )*};
}

dsp! {
    /// Bytes 0 and 2 of `x` zero-extended to the two halves.
    fn uxtb16(x: u32) -> u32 = "uxtb16 {r}, {x}" (x) preserves_flags;
    /// Bytes 1 and 3 of `x` zero-extended to the two halves.
    fn uxtb16_ror8(x: u32) -> u32 = "uxtb16 {r}, {x}, ror #8" (x) preserves_flags;
    /// Halfwise `a - b` (16-bit lanes, wrapping; sets only the GE flags).
    fn ssub16(a: u32, b: u32) -> u32 = "ssub16 {r}, {a}, {b}" (a, b);
    /// `acc + a.lo * b.lo + a.hi * b.hi` (signed 16-bit halves), wrapping
    /// (sets only the Q flag).
    fn smlad(acc: i32, a: u32, b: u32) -> i32 = "smlad {r}, {a}, {b}, {acc}" (a, b, acc);
    /// Bytes 0 and 2 of `x` sign-extended to the two halves: `(x.b0, x.b2)`.
    fn sxtb16(x: u32) -> u32 = "sxtb16 {r}, {x}" (x) preserves_flags;
    /// Bytes 1 and 3 of `x` sign-extended to the two halves: `(x.b1, x.b3)`.
    fn sxtb16_ror8(x: u32) -> u32 = "sxtb16 {r}, {x}, ror #8" (x) preserves_flags;
    /// `c + round(a * b / 2^32)` (ties up): SMMLAR with `c` in the high word.
    fn smmlar(a: i32, b: i32, c: i32) -> i32 = "smmlar {r}, {a}, {b}, {c}" (a, b, c) preserves_flags;
    /// `x` saturated to `-128..=127` (sets only the Q flag).
    fn ssat8(x: i32) -> i32 = "ssat {r}, #8, {x}" (x);
    /// `x << e` for `e` in `0..32` (the shift register's bottom byte; no
    /// masking, which `<<` on a variable count costs).
    fn shl(x: i32, e: u32) -> i32 = "lsl {r}, {x}, {e}" (x, e) preserves_flags;
    /// `x >> e` (arithmetic) for `e` in `0..32`, as [`shl`].
    fn asr(x: i32, e: u32) -> i32 = "asr {r}, {x}, {e}" (x, e) preserves_flags;
}
