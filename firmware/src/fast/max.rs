//! Cortex-M4 kernels for the max-pooling LeNets, `lenet5-max` (6 and 16
//! channels) and `lenet5-wide` (16 and 32), equal bit for bit to
//! lenet-core's integer reference (`QuantLeNet::infer`).
//!
//! Legend: `C1`/`C2` conv1/conv2 output channels, `K` = 5 kernel side;
//! conv1 maps (1, 28, 28) to (C1, 24, 24), pooled (C1, 12, 12); conv2 maps
//! that to (C2, 8, 8), pooled (C2, 4, 4), the `FLAT` = 16 C2 features.
//!
//! Max pooling is fused into the convolution before the requantization:
//! `requantize` is non-decreasing in the accumulator (its multiplier is
//! never negative) and `build.rs` checks that the activation table is
//! non-decreasing too, so the largest of a window's four activations is
//! the activation of its largest accumulator. Each pooled value costs one
//! requantization and one table read, not four.
//!
//! As in the classic kernels (`super`), activations are i16 minus their
//! zero point, two to a word, weights are doubled i16 pairs in flash
//! (`packed.rs`, written by `build.rs`), and the sums are 32-bit wrapping
//! SMLAD sums, bounded by `2^29` (checked by `build.rs`), so the maxima of
//! doubled accumulators are the doubled maxima.

use core::arch::asm;

use super::ConvTable;
use super::dsp::{ssub16, uxtb16, uxtb16_ror8};
use super::linear::fc_tail;
use super::packed::*;

/// Input channels of conv2 in one chunk of its input layout (`CH / 2`
/// words per pixel): 6 (all of them) for `lenet5-max`, 8 (two chunks) for
/// `lenet5-wide`.
const CH: usize = if C1 == 6 { 6 } else { 8 };
/// Chunks of conv2's input.
const CHUNKS: usize = C1 / CH;
// `build.rs` sets `lenet_wide` (4-word chunks) exactly for the wide network.
const _: () = assert!(cfg!(lenet_wide) == (C1 == 16) && C1 == CH * CHUNKS);

/// Working memory of one inference.
pub struct Scratch {
    /// conv1 input: the image, i16 `p - 128 - zp_in`, two columns to a
    /// word. Once conv1 has read it, its first `FLAT / 2` words hold the
    /// fc1 input (the flattened pooled conv2 map, PyTorch order, minus its
    /// zero point, i16 two to a word). // (28, 14)
    x1: [u32; 28 * 14],
    /// conv2 input: pooled conv1 map minus its zero point, per chunk of
    /// `CH` channels and pixel the channel pairs. Once conv2 has read it,
    /// words 0..60 hold the fc2 input and 60..102 the fc3 input.
    /// // (CHUNKS, 12, 12, CH / 2)
    pub(super) x2: [u32; 12 * 12 * C1 / 2],
}

impl Scratch {
    /// Zeroed (can be a `static`).
    pub const fn new() -> Self {
        Self {
            x1: [0; 28 * 14],
            x2: [0; 12 * 12 * C1 / 2],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// int8 logits of a raw 28×28 image, as `QuantLeNet::infer`.
pub fn infer(s: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
    let off = (128 + INPUT_ZP) as u32 * 0x0001_0001;
    for (w, p) in
        s.x1.as_chunks_mut::<2>()
            .0
            .iter_mut()
            .zip(image.as_chunks::<4>().0)
    {
        let q = u32::from_le_bytes(*p);
        let (even, odd) = (uxtb16(q), uxtb16_ror8(q));
        // (p0, p1) and (p2, p3), each half minus the offset.
        w[0] = ssub16((even & 0xffff) | (odd << 16), off);
        w[1] = ssub16((odd & 0xffff_0000) | (even >> 16), off);
    }
    conv1(s);
    conv2(s);
    fc_tail(&mut s.x2, &s.x1[..FLAT / 2])
}

/// `rA = max(rA, rB)` (signed).
macro_rules! max {
    ($a:literal, $b:literal) => {
        concat!("cmp ", $a, ", ", $b, "\nit lt\nmovlt ", $a, ", ", $b, "\n")
    };
}

/// conv1 (1 → C1, K 5) + max pool 2 + act1: `x1` → `x2`. Per channel and
/// pooled row `py`, one [`conv1_row_pooled`].
fn conv1(s: &mut Scratch) {
    // Trip counts the optimizer cannot see, so that it does not unroll the
    // loops around the kernel (flash).
    let (nc, n12) = core::hint::black_box((C1, 12));
    let x1 = s.x1.as_ptr();
    let x2 = s.x2.as_mut_ptr().cast::<i16>();
    for c in 0..nc {
        debug_assert!(c < K1_T.len());
        // SAFETY: c < C1 (an index the optimizer cannot bound, so it keeps
        // the loop).
        let t = unsafe { &*K1_T.as_ptr().add(c) };
        // Halfword of channel c at pixel 0 of its chunk.
        let base = (c / CH) * 144 * CH + c % CH;
        for py in 0..n12 {
            // SAFETY: py < 12: the rows 2py..2py + 6 end at (2 * 11 + 6) *
            // 14 = 392 words, those of x1; the outputs, halfwords base +
            // (12 py + px) CH for px < 12, lie within x2's 144 C1.
            unsafe {
                let x = &*x1.add(2 * py * 14).cast::<[u32; 6 * 14]>();
                conv1_row_pooled(x2.add(base + py * 12 * CH), t, x);
            }
        }
    }
}

/// One kernel row of [`conv1_row_pooled`]: four input words (eight
/// columns; the pointer then moves one row, 14 words, down), then W
/// against words 0..3 for output column 0 and 1..4 for column 2, V
/// likewise for columns 1 and 3.
macro_rules! conv1_row {
    () => {
        "ldm lr, {{r4, r5, r6, r7}}
         add.w lr, lr, #56
         ldm r11!, {{r8, r9, r10}}
         smlad r0, r8, r4, r0
         smlad r0, r9, r5, r0
         smlad r0, r10, r6, r0
         smlad r2, r8, r5, r2
         smlad r2, r9, r6, r2
         smlad r2, r10, r7, r2
         ldm r11!, {{r8, r9, r10}}
         smlad r1, r8, r4, r1
         smlad r1, r9, r5, r1
         smlad r1, r10, r6, r1
         smlad r3, r8, r5, r3
         smlad r3, r9, r6, r3
         smlad r3, r10, r7, r3
        "
    };
}

/// The requantization of the window maximum in `$a` with the constants in
/// r4 (multiplier), r5, r8 (`e`), through the activation table (r10 its
/// address), less the output zero point (r9), stored at `[r12, #$off]`.
#[allow(unused_macros)] // used when a table is not the identity
macro_rules! out_lut {
    ($a:literal, $off:literal) => {
        concat!(
            "smmlar r1, ",
            $a,
            ", r4, r5\n",
            "add.w r1, r1, ",
            $a,
            ", asr #31\n",
            "asr.w r1, r1, r8\n",
            "usat r1, #8, r1\n",
            "ldrsb r1, [r10, r1]\n",
            "sub.w r1, r1, r9\n",
            "strh r1, [r12, #",
            $off,
            "]\n",
        )
    };
}

/// [`out_lut`] for an identity table (`build.rs` checks every entry): no
/// table offset in r5, no table read.
#[allow(unused_macros)] // used when a table is the identity
macro_rules! out_id {
    ($a:literal, $off:literal) => {
        concat!(
            "smmlar r1, ",
            $a,
            ", r4, r5\n",
            "add.w r1, r1, ",
            $a,
            ", asr #31\n",
            "asr.w r1, r1, r8\n",
            "ssat r1, #8, r1\n",
            "sub.w r1, r1, r9\n",
            "strh r1, [r12, #",
            $off,
            "]\n",
        )
    };
}

#[cfg(lenet_act1_id)]
macro_rules! conv1_out {
    ($a:literal, $off:literal) => {
        out_id!($a, $off)
    };
}
#[cfg(not(lenet_act1_id))]
macro_rules! conv1_out {
    ($a:literal, $off:literal) => {
        out_lut!($a, $off)
    };
}
#[cfg(lenet_act2_id)]
macro_rules! conv2_out {
    ($a:literal, $off:literal) => {
        out_id!($a, $off)
    };
}
#[cfg(not(lenet_act2_id))]
macro_rules! conv2_out {
    ($a:literal, $off:literal) => {
        out_lut!($a, $off)
    };
}

/// One pooled row of one conv1 channel: 12 pooled values, written `CH`
/// halfwords apart from `y` on. Per column quad `j` (output columns `4j ..
/// 4j + 4`, pooled columns `2j`, `2j + 1`) the four accumulators r0..r3 of
/// output row 0, then of row 1 (the input patch one row, 14 words, down),
/// the first row's sums waiting on the stack (the flags tell the rows
/// apart: nothing in the row body sets them); the max of each pooled
/// window, requantized, through the table, less the output zero point.
/// 12 SMLAD and 3 LDM per kernel row and output row.
///
/// # Safety
///
/// `y` is valid for writes of halfwords `0 .. 12 CH`.
#[inline(always)]
unsafe fn conv1_row_pooled(y: *mut i16, t: &ConvTable<{ 4 + 30 + 4 }, 0>, x: &[u32; 6 * 14]) {
    // SAFETY: reads the 39 words of `t` (the last, the table's address,
    // only when it is not `None`) and, per quad j, words 2j + r * 14 +
    // 0..4 of `x` for r in 0..6 (the last at 10 + 70 + 3 = 83 < 84), bytes
    // of the activation table at 0..=255 (USAT); writes halfwords j * 2CH
    // and j * 2CH + CH of `y` for j < 6 (the caller's promise); r6 and r7
    // are restored and the stack is balanced; the pointers are pinned to
    // r11, lr and r12 so that they are neither r6 nor r7.
    unsafe {
        asm!(
            "push {{r6, r7}}",
            "push {{r0}}",
            "4:",
            "cmp r0, r0",
            "2:",
            "ldm r11!, {{r0, r1, r2, r3}}",
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            conv1_row!(),
            "bne 3f",
            "push {{r0, r1, r2, r3}}",
            "sub.w lr, lr, #224",
            "sub.w r11, r11, #136",
            "movs r0, #1",
            "b 2b",
            "3:",
            "pop {{r4, r5, r8, r9}}",
            max!("r0", "r1"),
            max!("r0", "r4"),
            max!("r0", "r5"),
            max!("r2", "r3"),
            max!("r2", "r8"),
            max!("r2", "r9"),
            "ldm r11, {{r4, r5, r8, r9, r10}}",
            conv1_out!("r0", "0"),
            conv1_out!("r2", "{ch2}"),
            // Next quad: input two words on, table at its start, output
            // two pooled pixels on; until the output passes the end.
            "sub.w lr, lr, #328",
            "sub.w r11, r11, #136",
            "add.w r12, r12, #{ch4}",
            "ldr r0, [sp]",
            "cmp r12, r0",
            "bne 4b",
            "add sp, #4",
            "pop {{r6, r7}}",
            ch2 = const 2 * CH,
            ch4 = const 4 * CH,
            inout("r11") t.words() => _,
            inout("lr") x.as_ptr() => _,
            inout("r12") y => _,
            inout("r0") y.wrapping_add(12 * CH) => _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
        );
    }
}

/// conv2 (C1 → C2, K 5) + max pool 2 + act2: `x2` → `x1` (flattened in
/// PyTorch order `co * 16 + py * 4 + px`). Per output channel pair and
/// pooled row one [`conv2_row_pooled`].
fn conv2(s: &mut Scratch) {
    let f1 = s.x1.as_mut_ptr().cast::<i16>();
    let x2 = s.x2.as_ptr();
    let (ng, n4) = core::hint::black_box((C2 / 2, 4));
    for g in 0..ng {
        debug_assert!(g < K2_T.len());
        // SAFETY: g < C2 / 2, a channel pair's table (an index the optimizer
        // cannot bound, so it keeps the loop).
        let t = unsafe { &*K2_T.as_ptr().add(g) };
        for py in 0..n4 {
            // SAFETY: py < 4: the row's windows (rows 2py..2py + 6, pixels
            // 0..8 of every chunk) end at word 24 py CH / 2 + X2_ROW <= 72
            // C1, the length of x2; the outputs, halfwords 32 g + 4 py +
            // 0..4 and 16 on, lie below 16 C2 = FLAT, within x1.
            unsafe {
                let x = &*x2.add(2 * py * 12 * CH / 2).cast::<[u32; X2_ROW]>();
                conv2_row_pooled(f1.add(2 * g * 16 + py * 4), t, x);
            }
        }
    }
}

/// Words of `x2` the four windows of a pooled conv2 row read, from the
/// first.
const X2_ROW: usize = X2_WINDOW + 3 * CH;

/// Words of `x2` a conv2 window reads, from its first.
const X2_WINDOW: usize = (CHUNKS - 1) * 72 * CH + (5 * 12 + 6) * CH / 2;

/// One tap of a 3-word chunk (`lenet5-max`) at byte offset `$o0` of the
/// row: both channels' three weight words (input channel pairs: A's in
/// r4, r5, r6, B's in r7, r8, r9) against the six input words of the even
/// column and the odd one (pixels `kx`, `kx + 1`), two by two.
#[cfg(not(lenet_wide))]
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

/// One tap of a 4-word chunk (`lenet5-wide`), as the 3-word one with
/// r6 and r7 holding the fourth weight and input words.
#[cfg(lenet_wide)]
macro_rules! conv2_tap {
    () => {
        "ldm r11!, {{r4, r5, r6, r7}}
         ldm lr!, {{r8, r9, r10, r12}}
         smlad r0, r4, r8, r0
         smlad r0, r5, r9, r0
         smlad r0, r6, r10, r0
         smlad r0, r7, r12, r0
         ldm lr, {{r8, r9, r10, r12}}
         smlad r1, r4, r8, r1
         smlad r1, r5, r9, r1
         smlad r1, r6, r10, r1
         smlad r1, r7, r12, r1
         ldm r11!, {{r4, r5, r6, r7}}
         smlad r3, r4, r8, r3
         smlad r3, r5, r9, r3
         smlad r3, r6, r10, r3
         smlad r3, r7, r12, r3
         ldmdb lr, {{r8, r9, r10, r12}}
         smlad r2, r4, r8, r2
         smlad r2, r5, r9, r2
         smlad r2, r6, r10, r2
         smlad r2, r7, r12, r2
        "
    };
}

/// One kernel row of a chunk: five taps, then the input pointer moves to
/// the next row (12 pixels; the 3-word taps address their pixels by
/// offset, the 4-word ones move the pointer 5 pixels on).
#[cfg(not(lenet_wide))]
macro_rules! conv2_row {
    () => {
        concat!(
            conv2_tap!("0", "8", "16"),
            conv2_tap!("12", "20", "28"),
            conv2_tap!("24", "32", "40"),
            conv2_tap!("36", "44", "52"),
            conv2_tap!("48", "56", "64"),
            "add.w lr, lr, #144\n"
        )
    };
}
#[cfg(lenet_wide)]
macro_rules! conv2_row {
    () => {
        concat!(
            conv2_tap!(),
            conv2_tap!(),
            conv2_tap!(),
            conv2_tap!(),
            conv2_tap!(),
            "add.w lr, lr, #112\n"
        )
    };
}

/// The 25 taps of one output row over every input chunk: `lenet5-max`
/// has one chunk; `lenet5-wide` moves from the first chunk's row 5 to
/// the second chunk's row 0 (`144 * 16 - 5 * 192` bytes on) in between.
#[cfg(not(lenet_wide))]
macro_rules! conv2_mac {
    () => {
        concat!(
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!()
        )
    };
}
#[cfg(lenet_wide)]
macro_rules! conv2_mac {
    () => {
        concat!(
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            "addw lr, lr, #1344\n",
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
            conv2_row!(),
        )
    };
}

/// Bytes the input pointer moves back after an output row (to the next
/// row's start) and the table pointer (to its start).
#[cfg(not(lenet_wide))]
macro_rules! conv2_back {
    () => {
        "subw lr, lr, #576\nsubw r11, r11, #616\n"
    };
}
#[cfg(lenet_wide)]
macro_rules! conv2_back {
    () => {
        "subw lr, lr, #3072\nsubw r11, r11, #1616\n"
    };
}

/// Bytes the input pointer moves back after a window (to the next one, two
/// pixels on) and the table pointer (from past the first channel's
/// constants to its start).
#[cfg(not(lenet_wide))]
macro_rules! conv2_next {
    () => {
        "subw lr, lr, #840\nsubw r11, r11, #636\n"
    };
}
#[cfg(lenet_wide)]
macro_rules! conv2_next {
    () => {
        "subw lr, lr, #3424\nsubw r11, r11, #1636\n"
    };
}

/// One pooled row of a conv2 channel pair (A, B): four pooled values of
/// each, written to `y[0..4]` and `y[16..20]`. Per window, per output row
/// `dy` the even and the odd column of both channels (r0, r1 and r2, r3),
/// the row's input starting at `x[6 CH dy]`, the first row's sums waiting
/// on the stack (the flags tell the rows apart); then the max of each
/// channel's four, requantized, through the table, less the output zero
/// point. The table `t` holds the doubled biases (A, A, B, B), per chunk
/// and tap A's weight words then B's, then A's requantization constants,
/// the output zero point, the activation table's address and B's
/// constants.
///
/// # Safety
///
/// `y` is valid for writes of halfwords `0..20`.
#[inline(always)]
unsafe fn conv2_row_pooled(y: *mut i16, t: &ConvTable<{ K2_LEN + 4 }, 3>, x: &[u32; X2_ROW]) {
    // SAFETY: reads the K2_LEN + 8 words of `t` and, per window, output row,
    // tap and chunk, CH / 2 words of the even and the odd column of `x`,
    // the last at X2_ROW - 1; writes halfwords 0..4 and 16..20 of `y` (the
    // caller's promise); r6 and r7 are restored and the stack is balanced;
    // the pointers are pinned to r11 and lr so that they are neither r6
    // nor r7, the output pointer and its end wait on the stack.
    unsafe {
        asm!(
            "push {{r6, r7}}",
            "push {{r0, r1}}",
            "4:",
            "cmp r0, r0",
            "2:",
            "ldm r11!, {{r0, r1, r2, r3}}",
            conv2_mac!(),
            "bne 3f",
            "push {{r0, r1, r2, r3}}",
            conv2_back!(),
            "movs r0, #1",
            "b 2b",
            "3:",
            "pop {{r4, r5, r8, r9}}",
            max!("r0", "r1"),
            max!("r0", "r4"),
            max!("r0", "r5"),
            max!("r2", "r3"),
            max!("r2", "r8"),
            max!("r2", "r9"),
            "ldr r12, [sp]",
            "ldm r11!, {{r4, r5, r8, r9, r10}}",
            conv2_out!("r0", "0"),
            "ldm r11, {{r4, r5, r8}}",
            conv2_out!("r2", "32"),
            conv2_next!(),
            "add.w r12, r12, #2",
            "ldr r0, [sp, #4]",
            "str r12, [sp]",
            "cmp r12, r0",
            "bne 4b",
            "add sp, #8",
            "pop {{r6, r7}}",
            inout("r11") t.words() => _,
            inout("lr") x.as_ptr() => _,
            inout("r0") y => _,
            inout("r1") y.wrapping_add(4) => _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r12") _,
        );
    }
}
