//! Cortex-M4 kernels for the classic LeNet-5 (here) and the max-pooling
//! networks (`max`, built instead when `build.rs` sets `lenet_max`), equal
//! bit for bit to lenet-core's integer reference (`QuantLeNet::infer`);
//! the QEMU test checks that on all 10,000 test images for each committed
//! model. The linear layers and the helpers here serve both.
//!
//! Legend: `C` channels, `H`/`W` rows/columns, `K` = 5 kernel side.
//!
//! The multiply-accumulates run on the M4's dual 16-bit MAC, SMLAD
//! (`acc + a.lo * b.lo + a.hi * b.hi`), through `asm!` because the DSP
//! intrinsics are nightly-only. Activations are kept as i16 *minus their
//! zero point*, two to a word, so a padded tap is a 0 and every product is
//! `w * (x - zp)` as in the reference; the int32 sums wrap like the
//! reference's `wrapping_add`. `build.rs` pre-arranges the weights and
//! the per-channel constants (`packed.rs`) to match each layout below.
//! Requantization (`Requant`) and the 2×2 average (`pool`) are shorter
//! forms of lenet-core's `requantize` and `avg_pool_round`, exact under
//! conditions `build.rs` checks for the embedded model (else it builds
//! the reference); apart from that only the accumulation order differs
//! from the reference (which integer addition does not notice).
//!
//! The conv kernels use r6 and r7, which the compiler reserves, by saving
//! them on the stack inside the asm block, with their pointer operands
//! pinned to r11 and lr so that they are neither.

use core::arch::asm;

// The tables differ with the model's kind and activations.
#[allow(clippy::all, missing_docs, dead_code)]
mod packed {
    include!(concat!(env!("OUT_DIR"), "/packed.rs"));
}
#[cfg(not(lenet_max))]
use packed::*;

#[cfg(lenet_max)]
mod max;
#[cfg(lenet_max)]
pub use max::{Scratch, infer};

/// Bytes 0 and 2 of `x` zero-extended to the two halves.
#[inline(always)]
fn uxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only.
    unsafe {
        asm!("uxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Bytes 1 and 3 of `x` zero-extended to the two halves.
#[inline(always)]
fn uxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only.
    unsafe {
        asm!("uxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Halfwise `a - b` (16-bit lanes, wrapping; sets only the GE flags).
#[inline(always)]
fn ssub16(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only.
    unsafe {
        asm!("ssub16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             options(pure, nomem, nostack));
    }
    r
}

/// `acc + a.lo * b.lo + a.hi * b.hi` (signed 16-bit halves), wrapping.
#[inline(always)]
fn smlad(acc: i32, a: u32, b: u32) -> i32 {
    let r: i32;
    // SAFETY: a register-only instruction of the M4's DSP extension.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             c = in(reg) acc, options(pure, nomem, nostack));
    }
    r
}

/// Bytes 0 and 2 of `x` sign-extended to the two halves: `(x.b0, x.b2)`.
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Bytes 1 and 3 of `x` sign-extended to the two halves: `(x.b1, x.b3)`.
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: register-only.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// The table a conv kernel reads for a channel group, in the order it
/// reads it (`build.rs` fills it): `head`, the biases, the weights and the
/// first channel's requantization constants; the address of the layer's
/// activation table (`None` for an identity table, which is skipped),
/// which the LDM of those constants loads too; `tail`, the other channels'
/// constants.
#[repr(C)]
pub struct ConvTable<const H: usize, const T: usize> {
    head: [u32; H],
    lut: Option<&'static [i8; 256]>,
    tail: [u32; T],
}

impl<const H: usize, const T: usize> ConvTable<H, T> {
    /// The first word; the kernels read the `H + 1 + T` words from here.
    #[inline(always)]
    fn words(&self) -> *const u32 {
        const { assert!(size_of::<Option<&[i8; 256]>>() == 4) };
        core::ptr::from_ref(self).cast()
    }
}

#[cfg(not(lenet_max))]
/// Working memory of one inference (4.4 KB).
pub struct Scratch {
    /// conv1 input: the image padded by 2, (32, 32) i16 `p - 128 - zp_in`,
    /// two columns to a word; the border is 0. Once conv1 has read it, its
    /// first 200 words hold the fc1 input (the flattened pooled conv2 map,
    /// PyTorch order, minus its zero point, i16 two to a word), so the
    /// border is written again with every image. // (H+4, (W+4)/2)
    x1: [u32; 32 * 16],
    /// conv2 input: pooled conv1 map minus its zero point; per pixel the
    /// channel pairs (0,1) (2,3) (4,5). Once conv2 has read it, words
    /// 0..60 hold the fc2 input and 60..102 the fc3 input (layout as fc1's).
    /// // (14, 14, 3)
    x2: [u32; 14 * 14 * 3],
}

#[cfg(not(lenet_max))]
impl Scratch {
    /// Zeroed (can be a `static`).
    pub const fn new() -> Self {
        Self {
            x1: [0; 32 * 16],
            x2: [0; 14 * 14 * 3],
        }
    }
}

#[cfg(not(lenet_max))]
impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(lenet_max))]
/// int8 logits of a raw 28×28 image, as `QuantLeNet5::infer`.
pub fn infer(s: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
    // Input: p - 128 - zp_in as i16, padded row iy + 2, column ix + 2; the
    // border rows 0, 1 and columns 0, 1, 30, 31 of rows 2..30 are 0 (rows
    // 30, 31 are never overwritten).
    s.x1[..2 * 16].fill(0);
    let off = (128 + INPUT_ZP) as u32 * 0x0001_0001;
    for (row, pixels) in s.x1[2 * 16..30 * 16]
        .chunks_exact_mut(16)
        .zip(image.as_chunks::<28>().0)
    {
        row[0] = 0;
        row[15] = 0;
        for (w, p) in row[1..15]
            .as_chunks_mut::<2>()
            .0
            .iter_mut()
            .zip(pixels.as_chunks::<4>().0)
        {
            let q = u32::from_le_bytes(*p);
            let (even, odd) = (uxtb16(q), uxtb16_ror8(q));
            // (p0, p1) and (p2, p3), each half minus the offset.
            w[0] = ssub16((even & 0xffff) | (odd << 16), off);
            w[1] = ssub16((odd & 0xffff_0000) | (even >> 16), off);
        }
    }
    conv1(s);
    conv2(s);
    fc_tail(&mut s.x2, &s.x1[..200])
}

/// fc1 + act3, fc2 + act4 and fc3, the same in every model: int8 logits
/// from `fc1_in` (the flattened pooled conv2 map minus its zero point, i16
/// two to a word). `x2` (conv2's input, read by now) takes fc2's input in
/// words 0..60 and fc3's in 60..102, where [`trunk_output`] finds them.
#[inline(always)]
fn fc_tail(x2: &mut [u32], fc1_in: &[u32]) -> [i8; 10] {
    use packed::{
        FC1_BIAS, FC1_MULT, FC1_RSHIFT, FC1_W, FC2_BIAS, FC2_MULT, FC2_RSHIFT, FC2_W, FC3_BIAS,
        FC3_MULT, FC3_RSHIFT, FC3_W, LOGITS_ZP, LUT3, LUT4, OUT_ZP3, OUT_ZP4, PRE_ZP3, PRE_ZP4,
    };
    let (f2, f3) = x2.split_at_mut(60);
    linear(
        f2.as_chunks_mut::<2>().0,
        fc1_in.as_chunks::<2>().0,
        &FC1_W,
        &FC1_BIAS,
        &FC1_MULT,
        &FC1_RSHIFT,
        PRE_ZP3,
        (!cfg!(lenet_act3_id)).then_some(&LUT3),
        OUT_ZP3,
    );
    linear(
        f3[..42].as_chunks_mut::<2>().0,
        f2.as_chunks::<2>().0,
        &FC2_W,
        &FC2_BIAS,
        &FC2_MULT,
        &FC2_RSHIFT,
        PRE_ZP4,
        (!cfg!(lenet_act4_id)).then_some(&LUT4),
        OUT_ZP4,
    );
    let f3: &[[u32; 2]; 21] = f3[..42].as_chunks::<2>().0.try_into().unwrap();
    let mut logits = [0i8; 10];
    for (o, l) in logits.iter_mut().enumerate() {
        let acc = dot(&FC3_W[o], f3, FC3_BIAS[o]);
        *l = Requant::new(FC3_MULT[o], FC3_RSHIFT[o], LOGITS_ZP).q(acc << 1) as i8;
    }
    logits
}

/// `c + round(a * b / 2^32)` (ties up): SMMLAR with `c` in the high word.
#[inline(always)]
fn smmlar(a: i32, b: i32, c: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only.
    unsafe {
        asm!("smmlar {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
             c = in(reg) c, options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `x` saturated to `-128..=127`.
#[inline(always)]
fn ssat8(x: i32) -> i32 {
    let r: i32;
    // SAFETY: register-only (sets only the Q flag).
    unsafe {
        asm!("ssat {r}, #8, {x}", r = lateout(reg) r, x = in(reg) x,
             options(pure, nomem, nostack));
    }
    r
}

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
struct Requant {
    m: i32,
    c: i32,
    e: u32,
}

impl Requant {
    /// The constants of multiplier `m`, right shift `e` (`-shift`) and
    /// zero point `zp`.
    #[inline(always)]
    fn new(m: i32, e: u8, zp: i32) -> Self {
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
    fn q(&self, acc2: i32) -> i32 {
        ssat8(asr(smmlar(acc2, self.m, self.c) + (acc2 >> 31), self.e))
    }
}

/// `x << e` for `e` in `0..32` (the shift register's bottom byte; no
/// masking, which `<<` on a variable count costs).
#[inline(always)]
fn shl(x: i32, e: u32) -> i32 {
    let r: i32;
    // SAFETY: register-only.
    unsafe {
        asm!("lsl {r}, {x}, {e}", r = lateout(reg) r, x = in(reg) x, e = in(reg) e,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `x >> e` (arithmetic) for `e` in `0..32`, as [`shl`].
#[inline(always)]
fn asr(x: i32, e: u32) -> i32 {
    let r: i32;
    // SAFETY: register-only.
    unsafe {
        asm!("asr {r}, {x}, {e}", r = lateout(reg) r, x = in(reg) x, e = in(reg) e,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// An activation table addressed by the int8 pre-activation.
#[derive(Clone, Copy)]
struct Lut(*const i8);

impl Lut {
    #[inline(always)]
    fn new(t: &'static [i8; 256]) -> Self {
        Self(t.as_ptr().wrapping_add(128))
    }

    /// `t[lut_index(q)]` for `q` in `-128..=127`.
    #[inline(always)]
    fn at(self, q: i32) -> i32 {
        debug_assert!((-128..=127).contains(&q));
        // SAFETY: `q + 128` is in `0..256`, within the table.
        i32::from(unsafe { *self.0.offset(q as isize) })
    }
}

#[cfg(not(lenet_max))]
/// The end of the conv kernels: requantizes the four doubled accumulators
/// of two channels (r0, r1 of the first, r2, r3 of the second) with the
/// constants at the table pointer r11 (per channel the multiplier,
/// `2^(e-1) + ((zp + 128) << e)` and `e`: [`Requant`] with the table offset
/// folded in, so USAT gives the table index; the first channel's three
/// words are followed by the activation table's address, loaded into
/// r10), reads the table and leaves each channel's sum of its two values
/// in r0 and r2. Sets no flags.
#[allow(unused_macros)] // used when a table is not the identity
macro_rules! act_pair_lut {
    () => {
        concat!(
            "ldm r11!, {{r4, r5, r8, r10}}\n",
            act_one!("r0", "usat r9,", "ldrsb r0, [r10, r9]\n"),
            act_one!("r1", "usat r9,", "ldrsb r1, [r10, r9]\n"),
            "ldm r11, {{r4, r5, r8}}\n",
            act_one!("r2", "usat r9,", "ldrsb r2, [r10, r9]\n"),
            act_one!("r3", "usat r9,", "ldrsb r3, [r10, r9]\n"),
            "add.w r0, r0, r1\n",
            "add.w r2, r2, r3\n",
        )
    };
}

#[cfg(not(lenet_max))]
/// [`act_pair_lut`] for an identity activation table (`build.rs` checks
/// every entry): the constants are [`Requant`]'s, SSAT gives the value;
/// the table's address (0) is loaded into r10 but not used.
#[allow(unused_macros)] // used when a table is the identity
macro_rules! act_pair_id {
    () => {
        concat!(
            "ldm r11!, {{r4, r5, r8, r10}}\n",
            act_one!("r0", "ssat r0,"),
            act_one!("r1", "ssat r1,"),
            "ldm r11, {{r4, r5, r8}}\n",
            act_one!("r2", "ssat r2,"),
            act_one!("r3", "ssat r3,"),
            "add.w r0, r0, r1\n",
            "add.w r2, r2, r3\n",
        )
    };
}

/// One output of [`act_pair_lut`]: SMMLAR with the constant, plus the
/// sign, shift into r9, then `$sat` (`"usat r9,"` for the table index and
/// `$then`, the table read, or `"ssat rN,"`: the value into the output's
/// own accumulator register, with an empty `$then`), saturating r9 to
/// 8 bits.
#[cfg(not(lenet_max))]
macro_rules! act_one {
    ($a:literal, $sat:literal) => {
        act_one!($a, $sat, "")
    };
    ($a:literal, $sat:literal, $then:literal) => {
        concat!(
            "smmlar r9, ",
            $a,
            ", r4, r5\n",
            "add.w r9, r9, ",
            $a,
            ", asr #31\n",
            "asr.w r9, r9, r8\n",
            $sat,
            " #8, r9\n",
            $then,
        )
    };
}

#[cfg(not(lenet_max))]
/// [`act_pair_lut`] for three channels (r0, r1; r2, r3; r6, r7), sums in
/// r0, r2 and r6.
#[allow(unused_macros)] // used when a table is not the identity
macro_rules! act_triple_lut {
    () => {
        concat!(
            "ldm r11!, {{r4, r5, r8, r10}}\n",
            act_one!("r0", "usat r9,", "ldrsb r0, [r10, r9]\n"),
            act_one!("r1", "usat r9,", "ldrsb r1, [r10, r9]\n"),
            "ldm r11!, {{r4, r5, r8}}\n",
            act_one!("r2", "usat r9,", "ldrsb r2, [r10, r9]\n"),
            act_one!("r3", "usat r9,", "ldrsb r3, [r10, r9]\n"),
            "ldm r11, {{r4, r5, r8}}\n",
            act_one!("r6", "usat r9,", "ldrsb r6, [r10, r9]\n"),
            act_one!("r7", "usat r9,", "ldrsb r7, [r10, r9]\n"),
            "add.w r0, r0, r1\n",
            "add.w r2, r2, r3\n",
            "add.w r6, r6, r7\n",
        )
    };
}

#[cfg(not(lenet_max))]
/// [`act_triple_lut`] for an identity table, as [`act_pair_id`].
#[allow(unused_macros)] // used when the table is the identity
macro_rules! act_triple_id {
    () => {
        concat!(
            "ldm r11!, {{r4, r5, r8, r10}}\n",
            act_one!("r0", "ssat r0,"),
            act_one!("r1", "ssat r1,"),
            "ldm r11!, {{r4, r5, r8}}\n",
            act_one!("r2", "ssat r2,"),
            act_one!("r3", "ssat r3,"),
            "ldm r11, {{r4, r5, r8}}\n",
            act_one!("r6", "ssat r6,"),
            act_one!("r7", "ssat r7,"),
            "add.w r0, r0, r1\n",
            "add.w r2, r2, r3\n",
            "add.w r6, r6, r7\n",
        )
    };
}

#[cfg(all(lenet_act1_id, not(lenet_max)))]
macro_rules! act1 {
    () => {
        act_triple_id!()
    };
}
#[cfg(not(any(lenet_act1_id, lenet_max)))]
macro_rules! act1 {
    () => {
        act_triple_lut!()
    };
}
#[cfg(all(lenet_act2_id, not(lenet_max)))]
macro_rules! act2 {
    () => {
        act_pair_id!()
    };
}
#[cfg(not(any(lenet_act2_id, lenet_max)))]
macro_rules! act2 {
    () => {
        act_pair_lut!()
    };
}

#[cfg(not(lenet_max))]
/// A pooled window of a channel pair: the kernel `$mac` (accumulators r0..r3
/// loaded from the table's biases) and `$act` (an [`act_pair_lut`]) once
/// per output row; the first row's sums wait on the stack (the kernel
/// needs every other register, r6 and r7 too, saved there) and are added
/// to the second's in r0 and r2. Between the rows the input pointer moves back by
/// `$xback` bytes (to the next row's start) and the table pointer by
/// `$tback` (to its start). The flags tell the rows apart: nothing in the
/// loop body sets them.
macro_rules! pooled_pair {
    ($mac:expr, $act:expr, $xback:literal, $tback:literal) => {
        concat!(
            "push {{r6, r7}}\n",
            "cmp r0, r0\n",
            "2:\n",
            "ldm r11!, {{r0, r1, r2, r3}}\n",
            $mac,
            $act,
            "bne 3f\n",
            "push {{r0, r2}}\n",
            "sub.w lr, lr, #",
            $xback,
            "\n",
            "sub.w r11, r11, #",
            $tback,
            "\n",
            "movs r0, #1\n",
            "b 2b\n",
            "3:\n",
            "pop {{r4, r5}}\n",
            "add.w r0, r0, r4\n",
            "add.w r2, r2, r5\n",
            "pop {{r6, r7}}\n",
        )
    };
}

#[cfg(not(lenet_max))]
/// lenet-core's 2×2 average of four activations summing to `sum`, less
/// the output zero point `zp`: `avg_pool_round(sum, 4)` is `(sum + 2 +
/// (sum >> 31)) >> 2` (`build.rs` checks it on every sum), and
/// subtracting `zp` after the shift is subtracting `4 zp` before.
#[inline(always)]
fn pool(sum: i32, zp: i32) -> i32 {
    (sum + (2 - 4 * zp) + (sum >> 31)) >> 2
}

#[cfg(not(lenet_max))]
/// conv1 (1 → 6, K 5, pad 2) + act1 + avg pool 2: `x1` → `x2`.
///
/// Per pooled pixel `(py, px)` and channel triple the two conv outputs of
/// each channel at row `2py + dy`, columns `2px + dx` read padded rows
/// `2py + dy .. 2py + dy + 5`, words `px .. px + 3` (columns `2px .. 2px +
/// 6`): an even column takes the words with the weights W = (w0,w1)
/// (w2,w3) (w4,0), the odd one with V = (0,w0) (w1,w2) (w3,w4).
fn conv1(s: &mut Scratch) {
    // Trip counts the optimizer cannot see, so that it does not unroll the
    // loops around the kernel (flash).
    let (n14, n2) = core::hint::black_box((14, 2));
    let x1 = s.x1.as_ptr();
    let mut out = s.x2.as_mut_ptr().cast::<i16>();
    for py in 0..n14 {
        for px in 0..n14 {
            let base = 2 * py * 16 + px;
            debug_assert!(base + 5 * 16 + 3 <= s.x1.len());
            // SAFETY: py, px < 14, so base <= 26 * 16 + 13 = 429 and the
            // window's 6 rows end within the 512 words.
            let x = unsafe { &*x1.add(base).cast::<[u32; 5 * 16 + 3]>() };
            for g in 0..n2 {
                debug_assert!(g < C1_T.len());
                // SAFETY: g < 2, a channel triple's table (an index the
                // optimizer cannot bound, so it keeps the loop).
                let t = unsafe { &*C1_T.as_ptr().add(g) };
                let v = conv1_pooled(t, x).map(|a| pool(a, OUT_ZP1) as i16);
                // SAFETY: 14 * 14 * 6 halfwords in all, those of x2 (per
                // pixel the channels in order, two to a word).
                unsafe {
                    out.write(v[0]);
                    out.add(1).write(v[1]);
                    out.add(2).write(v[2]);
                    out = out.add(3);
                }
            }
        }
    }
}

#[cfg(not(lenet_max))]
/// One kernel row of [`conv1_pooled`]: three input words (the pointer then
/// moves one padded row, 16 words, down), then per channel W against them
/// for the even column and V for the odd one.
macro_rules! conv1_row {
    () => {
        "ldm lr, {{r9, r10, r12}}
         add.w lr, lr, #64
         ldm r11!, {{r4, r5, r8}}
         smlad r0, r4, r9, r0
         smlad r0, r5, r10, r0
         smlad r0, r8, r12, r0
         ldm r11!, {{r4, r5, r8}}
         smlad r1, r4, r9, r1
         smlad r1, r5, r10, r1
         smlad r1, r8, r12, r1
         ldm r11!, {{r4, r5, r8}}
         smlad r2, r4, r9, r2
         smlad r2, r5, r10, r2
         smlad r2, r8, r12, r2
         ldm r11!, {{r4, r5, r8}}
         smlad r3, r4, r9, r3
         smlad r3, r5, r10, r3
         smlad r3, r8, r12, r3
         ldm r11!, {{r4, r5, r8}}
         smlad r6, r4, r9, r6
         smlad r6, r5, r10, r6
         smlad r6, r8, r12, r6
         ldm r11!, {{r4, r5, r8}}
         smlad r7, r4, r9, r7
         smlad r7, r5, r10, r7
         smlad r7, r8, r12, r7
        "
    };
}

#[cfg(not(lenet_max))]
/// The sums of the four activations of a pooled conv1 window, per channel
/// of a triple: per output row `dy` the even and the odd column of each
/// channel (six accumulators, r6 and r7 among them, saved on the stack),
/// whose 5×6 input patch starts at `x[16 dy]` (rows 16 words apart). The
/// table `t` (`build.rs`) holds the biases (loaded as the accumulators),
/// per kernel row the six weight triples, then the requantization
/// constants and the activation table's address. 15 SMLAD per output; per kernel row one LDM for the input
/// and one per weight triple. The first row's sums wait on the stack; the
/// flags tell the rows apart, as in [`pooled_pair`].
#[inline(always)]
fn conv1_pooled(t: &ConvTable<{ 6 + 90 + 3 }, 6>, x: &[u32; 5 * 16 + 3]) -> [i32; 3] {
    let (a, b, c): (i32, i32, i32);
    // SAFETY: reads the 106 words of `t` twice, words r * 16 + 0..3 of `x`
    // for r in 0..6 (the last at 5 * 16 + 2 = 82 < 83), and bytes of the
    // table `t.lut` at indices 0..=255 (USAT); r6 and r7 are restored and the stack is
    // balanced; the pointers are pinned to r11 and lr so that they are
    // neither r6 nor r7.
    unsafe {
        asm!(
            "push {{r6, r7}}",
            "cmp r0, r0",
            "2:",
            "ldm r11!, {{r0, r1, r2, r3, r6, r7}}",
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            act1!(),
            "bne 3f",
            "push {{r0, r2, r6}}",
            "subw lr, lr, #256",
            "subw r11, r11, #412",
            "movs r0, #1",
            "b 2b",
            "3:",
            "pop {{r4, r5, r8}}",
            "add.w r0, r0, r4",
            "add.w r2, r2, r5",
            "add.w r1, r6, r8",
            "pop {{r6, r7}}",
            inout("r11") t.words() => _,
            inout("lr") x.as_ptr() => _,
            out("r0") a,
            out("r1") c,
            out("r2") b,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r12") _,
            options(readonly),
        );
    }
    [a, b, c]
}

#[cfg(not(lenet_max))]
/// conv2 (6 → 16, K 5) + act2 + avg pool 2: `x2` → `f1` (flattened in
/// PyTorch order `co * 25 + py * 5 + px`). One SMLAD takes an input
/// channel pair at one tap; per pooled window and output channel pair the
/// two output rows `dy` each take one [`conv2_pair`].
fn conv2(s: &mut Scratch) {
    let f1 = s.x1.as_mut_ptr().cast::<i16>();
    let x2 = s.x2.as_ptr();
    // Trip counts the optimizer cannot see, so that it does not unroll the
    // loops around the long kernel (flash).
    let (n8, n5) = core::hint::black_box((8, 5));
    for g in 0..n8 {
        debug_assert!(g < C2_T.len());
        // SAFETY: g < 8, a channel pair's table (an index the optimizer
        // cannot bound, so it keeps the loop).
        let t = unsafe { &*C2_T.as_ptr().add(g) };
        for py in 0..n5 {
            for px in 0..n5 {
                let base = (2 * py * 14 + 2 * px) * 3;
                debug_assert!(base + 5 * 42 + 18 <= s.x2.len());
                // SAFETY: py, px < 5, so base <= (8 * 14 + 8) * 3 = 360 and
                // the 228 words end within the 588 of x2.
                let x = unsafe { &*x2.add(base).cast::<[u32; 5 * 42 + 18]>() };
                let sum = conv2_pooled(t, x);
                let i = 2 * g * 25 + py * 5 + px;
                // SAFETY: `i` and `i + 25` are below 400, the halfwords of `f1`.
                unsafe {
                    f1.add(i).write(pool(sum[0], OUT_ZP2) as i16);
                    f1.add(i + 25).write(pool(sum[1], OUT_ZP2) as i16);
                }
            }
        }
    }
}

#[cfg(not(lenet_max))]
/// One tap of [`conv2_pair`] at byte offset `$o0` of the row: both
/// channels' three weight words (input channel pairs: the first's in r4,
/// r5, r6, the second's in r7, r8, r9) against the six input words of
/// the even column and the odd one (pixels `kx`, `kx + 1`), two by two.
macro_rules! conv2_tap {
    ($o0:literal, $o1:literal, $o2:literal) => {
        concat!(
            "ldm r11!, {{r4, r5, r6, r7, r8, r9}}\n",
            "ldrd r10, r12, [lr, #",
            $o0,
            "]\n",
            "smlad r0, r4, r10, r0
             smlad r0, r5, r12, r0
             smlad r2, r7, r10, r2
             smlad r2, r8, r12, r2\n",
            "ldrd r10, r12, [lr, #",
            $o1,
            "]\n",
            "smlad r0, r6, r10, r0
             smlad r2, r9, r10, r2
             smlad r1, r4, r12, r1
             smlad r3, r7, r12, r3\n",
            "ldrd r10, r12, [lr, #",
            $o2,
            "]\n",
            "smlad r1, r5, r10, r1
             smlad r1, r6, r12, r1
             smlad r3, r8, r10, r3
             smlad r3, r9, r12, r3\n",
        )
    };
}

#[cfg(not(lenet_max))]
/// One kernel row of [`conv2_pair`]: five taps (their pixels addressed by
/// offset), then the input pointer moves to the next row (14 columns of 3
/// words).
macro_rules! conv2_row {
    () => {
        concat!(
            conv2_tap!("0", "8", "16"),
            conv2_tap!("12", "20", "28"),
            conv2_tap!("24", "32", "40"),
            conv2_tap!("36", "44", "52"),
            conv2_tap!("48", "56", "64"),
            "add.w lr, lr, #168\n"
        )
    };
}

#[cfg(not(lenet_max))]
/// The sums of the four activations of a pooled conv2 window, per output
/// channel of a pair, as [`conv1_pooled`]: per output row `dy` the even
/// and the odd column, whose input starts at `x[42 dy]` (rows 42 words
/// apart). 75 SMLAD per output; per tap one LDM of weights and three LDRD
/// of inputs for 12 SMLAD.
#[inline(always)]
fn conv2_pooled(t: &ConvTable<{ 4 + 150 + 3 }, 3>, x: &[u32; 5 * 42 + 18]) -> [i32; 2] {
    let (a, b): (i32, i32);
    // SAFETY: reads the 161 words of `t` twice, for each output row dy and
    // tap (ky, kx) the words (dy + ky) * 42 + kx * 3 + 0..6 of `x` (the last
    // at 5 * 42 + 4 * 3 + 5 = 227 < 228), and bytes of the table `t.lut` at
    // indices 0..=255; r6 and r7 are restored, the pointers pinned as in conv1.
    unsafe {
        asm!(
            pooled_pair!(
                concat!(conv2_row!(), conv2_row!(), conv2_row!(), conv2_row!(), conv2_row!()),
                act2!(),
                "672",
                "632"
            ),
            inout("r11") t.words() => _,
            inout("lr") x.as_ptr() => _,
            out("r0") a,
            out("r1") _,
            out("r2") b,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r12") _,
            options(readonly),
        );
    }
    [a, b]
}

/// `bias + sum_i w[i] * x[i]` over `G` groups of four: int8 weights four
/// to a word, `x` in the grouped i16 layout.
#[inline(always)]
fn dot<const G: usize>(w: &[u32; G], x: &[[u32; 2]; G], bias: i32) -> i32 {
    let mut acc = bias;
    for (&q, x) in w.iter().zip(x) {
        acc = smlad(acc, sxtb16(q), x[0]);
        acc = smlad(acc, sxtb16_ror8(q), x[1]);
    }
    acc
}

/// Four outputs `o..o + 4` of a linear layer (`build.rs`'s pass of two
/// output pairs) over the `2 * N` input words of `x`. A weight word of pair
/// `(a, b)` at input word `k` holds bytes `(w[a][2k] + 128, w[b][2k],
/// w[a][2k+1] + 128, w[b][2k+1])`: as two i16 halves it is `(w[a][2k] +
/// 128 + 256 w[b][2k], ..)`, so one SMLAD of the raw word adds `S_a + 128 *
/// (x sum) + 256 * S_b` to accumulator `A`, and one of its SXTB16 ROR 8,
/// `(w[b][2k], w[b][2k+1])`, adds `S_b` to `B`: two MACs per instruction
/// with one unpack for four. Returns `[A0, B0, A1, B1]`; the caller
/// separates `a` as `A - 256 * B` (wrapping, as the sums).
#[inline(always)]
fn pass4<const N: usize>(w: &[[u32; 4]; N], x: &[[u32; 2]; N], acc: [i32; 4]) -> [i32; 4] {
    const { assert!(N > 0 && N.is_multiple_of(2)) };
    let [mut a0, mut b0, mut a1, mut b1] = acc;
    // SAFETY: reads the 4 * N words of `w` and the 2 * N words of `x` in
    // order, four and two per step, four steps per loop if N is a multiple
    // of 4, else two (N is even). r6 and r7 are restored; the pointers are
    // pinned to r11 and lr so that they are neither.
    unsafe {
        if N.is_multiple_of(4) {
            asm!(
                "push {{r6, r7}}",
                "2:",
                pass4_step!(),
                pass4_step!(),
                pass4_step!(),
                pass4_step!(),
                "subs r12, #1",
                "bne 2b",
                "pop {{r6, r7}}",
                inout("r11") w.as_ptr() => _,
                inout("lr") x.as_ptr() => _,
                inout("r12") N / 4 => _,
                inout("r0") a0,
                inout("r1") b0,
                inout("r2") a1,
                inout("r3") b1,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                options(readonly),
            );
        } else {
            asm!(
                "push {{r6, r7}}",
                "2:",
                pass4_step!(),
                pass4_step!(),
                "subs r12, #1",
                "bne 2b",
                "pop {{r6, r7}}",
                inout("r11") w.as_ptr() => _,
                inout("lr") x.as_ptr() => _,
                inout("r12") N / 2 => _,
                inout("r0") a0,
                inout("r1") b0,
                inout("r2") a1,
                inout("r3") b1,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                options(readonly),
            );
        }
    }
    [a0, b0, a1, b1]
}

/// One input word pair of [`pass4`]: LDRD of the inputs, LDM of the four
/// weight words (two per input word, one per output pair), each used raw
/// and unpacked.
macro_rules! pass4_step {
    () => {
        "ldrd r8, r9, [lr], #8
         ldm r11!, {{r4, r5, r6, r7}}
         sxtb16 r10, r4, ror #8
         smlad r0, r4, r8, r0
         smlad r1, r10, r8, r1
         sxtb16 r10, r5, ror #8
         smlad r2, r5, r8, r2
         smlad r3, r10, r8, r3
         sxtb16 r10, r6, ror #8
         smlad r0, r6, r9, r0
         smlad r1, r10, r9, r1
         sxtb16 r10, r7, ror #8
         smlad r2, r7, r9, r2
         smlad r3, r10, r9, r3
        "
    };
}
use pass4_step;

/// Linear layer + activation table (`None`: the identity, skipped): `y`
/// (i16 halfwords, minus `out_zp`)
/// from `x` (`2 * N` words). `w` and `bias` as `build.rs` arranges them
/// (the first bias of each output pair carries `256 *` the second's);
/// `rshift` holds the right shifts `-shift`.
#[allow(clippy::too_many_arguments)]
fn linear<const O: usize, const N: usize, const P: usize>(
    y: &mut [[u32; 2]],
    x: &[[u32; 2]],
    w: &[[[u32; 4]; N]; P],
    bias: &[i32; O],
    mult: &[i32; O],
    rshift: &[u8; O],
    pre_zp: i32,
    lut: Option<&'static [i8; 256]>,
    out_zp: i32,
) {
    const { assert!(O == 4 * P) };
    let x: &[[u32; 2]; N] = x[..N].try_into().unwrap();
    let lut = lut.map(Lut::new);
    // Sum of the inputs (both halves of every word), times 128: the offset
    // the raw weight words add to each `A`.
    let sx = x
        .as_flattened()
        .iter()
        .fold(0, |s, &v| smlad(s, v, 0x0001_0001));
    let off = sx.wrapping_mul(128);
    for (p, w) in w.iter().enumerate() {
        let o = 4 * p;
        let acc = pass4(
            w,
            x,
            [
                bias[o].wrapping_sub(off),
                bias[o + 1],
                bias[o + 2].wrapping_sub(off),
                bias[o + 3],
            ],
        );
        let acc = [
            acc[0].wrapping_sub(acc[1] << 8),
            acc[1],
            acc[2].wrapping_sub(acc[3] << 8),
            acc[3],
        ];
        let v = core::array::from_fn::<i32, 4, _>(|k| {
            let rq = Requant::new(mult[o + k], rshift[o + k], pre_zp);
            let q = rq.q(acc[k] << 1);
            lut.map_or(q, |t| t.at(q)) - out_zp
        });
        y[p] = [
            u32::from(v[0] as u16) | (u32::from(v[1] as u16) << 16),
            u32::from(v[2] as u16) | (u32::from(v[3] as u16) << 16),
        ];
    }
}

/// The trunk activations the last [`infer`] left in `s`, minus their zero
/// points, in PyTorch order: fc1's 120 (`fc1`) or fc2's 84 (the inputs of
/// a head trained on the device).
pub fn trunk_output(s: &Scratch, fc1: bool) -> impl Iterator<Item = i32> + '_ {
    let words = if fc1 { &s.x2[..60] } else { &s.x2[60..102] };
    words.iter().flat_map(|&w| {
        [
            i32::from(w as u16 as i16),
            i32::from((w >> 16) as u16 as i16),
        ]
    })
}
