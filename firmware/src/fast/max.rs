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

use super::packed::*;
use super::{Lut, Requant, dot, linear, ssub16, uxtb16, uxtb16_ror8};

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
    x2: [u32; 12 * 12 * C1 / 2],
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
    let (f2, f3) = s.x2.split_at_mut(60);
    linear(
        f2.as_chunks_mut::<2>().0,
        s.x1[..FLAT / 2].as_chunks::<2>().0,
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

/// A pooled activation minus the output zero point, from the largest
/// doubled accumulator of its window.
#[inline(always)]
fn act(rq: &Requant, lut: Option<&'static [i8; 256]>, out_zp: i32, max2: i32) -> i16 {
    let q = rq.q(max2);
    (lut.map_or(q, |t| Lut::new(t).at(q)) - out_zp) as i16
}

/// `rA = max(rA, rB)` (signed).
macro_rules! max {
    ($a:literal, $b:literal) => {
        concat!("cmp ", $a, ", ", $b, "\nit lt\nmovlt ", $a, ", ", $b, "\n")
    };
}

/// conv1 (1 → C1, K 5) + max pool 2 + act1: `x1` → `x2`. Per channel,
/// pooled row `py` and column pair `2j, 2j + 1`, one [`conv1_quad`].
fn conv1(s: &mut Scratch) {
    // Trip counts the optimizer cannot see, so that it does not unroll the
    // loops around the kernel (flash).
    let (nc, n12, n6) = core::hint::black_box((C1, 12, 6));
    let lut = (!cfg!(lenet_act1_id)).then_some(&LUT1);
    let x1 = s.x1.as_ptr();
    let x2 = s.x2.as_mut_ptr().cast::<i16>();
    for c in 0..nc {
        debug_assert!(c < K1_T.len());
        // SAFETY: c < C1 (an index the optimizer cannot bound, so it keeps
        // the loop).
        let (t, rq) = unsafe { (&*K1_T.as_ptr().add(c), &*RQ1.as_ptr().add(c)) };
        // Halfword of channel c at pixel 0 of its chunk.
        let base = (c / CH) * 144 * CH + c % CH;
        for py in 0..n12 {
            for j in 0..n6 {
                // SAFETY: py < 12, j < 6: the window's rows 2py..2py + 6,
                // words 2j..2j + 4, end at (2 * 11 + 5) * 14 + 13 = 391 <
                // 392.
                let x = unsafe { &*x1.add(2 * py * 14 + 2 * j).cast::<[u32; 5 * 14 + 4]>() };
                let [a, b] = conv1_quad(t, x);
                let i = base + (py * 12 + 2 * j) * CH;
                // SAFETY: i + CH < CHUNKS * 144 * CH = 144 * C1, the halfwords of x2.
                unsafe {
                    x2.add(i).write(act(rq, lut, OUT_ZP1, a));
                    x2.add(i + CH).write(act(rq, lut, OUT_ZP1, b));
                }
            }
        }
    }
}

/// One kernel row of [`conv1_quad`]: four input words (eight columns; the
/// pointer then moves one row, 14 words, down), then W against words 0..3
/// for output column 0 and 1..4 for column 2, V likewise for columns 1
/// and 3.
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

/// The largest doubled accumulator of two pooled conv1 windows of one
/// channel: output rows `2py + dy`, columns `4j .. 4j + 4` (four
/// accumulators r0..r3), whose 5×8 input patch starts at `x[14 dy]`. The
/// table `t` (`build.rs`) holds the doubled bias four times (loaded as the
/// accumulators), then per kernel row W = (w0,w1) (w2,w3) (w4,0) and V =
/// (0,w0) (w1,w2) (w3,w4). 12 SMLAD and 3 LDM per kernel row and output
/// row. The first row's sums wait on the stack; the flags tell the rows
/// apart (nothing in the loop body sets them).
#[inline(always)]
fn conv1_quad(t: &[u32; 34], x: &[u32; 5 * 14 + 4]) -> [i32; 2] {
    let (a, b): (i32, i32);
    // SAFETY: reads the 34 words of `t` twice and words r * 14 + 0..4 of
    // `x` for r in 0..6 (the last at 5 * 14 + 3 = 73 < 74); r6 and r7 are
    // restored and the stack is balanced; the pointers are pinned to r11
    // and lr so that they are neither r6 nor r7.
    unsafe {
        asm!(
            "push {{r6, r7}}",
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
            "pop {{r6, r7}}",
            inout("r11") t.as_ptr() => _,
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
            options(readonly),
        );
    }
    [a, b]
}

/// conv2 (C1 → C2, K 5) + max pool 2 + act2: `x2` → `x1` (flattened in
/// PyTorch order `co * 16 + py * 4 + px`). Per output channel pair and
/// pooled pixel one [`conv2_pair`].
fn conv2(s: &mut Scratch) {
    let f1 = s.x1.as_mut_ptr().cast::<i16>();
    let x2 = s.x2.as_ptr();
    let lut = (!cfg!(lenet_act2_id)).then_some(&LUT2);
    let (ng, n4) = core::hint::black_box((C2 / 2, 4));
    for g in 0..ng {
        debug_assert!(g < K2_T.len());
        // SAFETY: g < C2 / 2, a channel pair's table (an index the optimizer
        // cannot bound, so it keeps the loop); 2g + 1 < C2.
        let (t, ra, rb) = unsafe {
            (
                &*K2_T.as_ptr().add(g),
                &*RQ2.as_ptr().add(2 * g),
                &*RQ2.as_ptr().add(2 * g + 1),
            )
        };
        for py in 0..n4 {
            for px in 0..n4 {
                let base = (2 * py * 12 + 2 * px) * CH / 2;
                // SAFETY: py, px < 4: the window (rows 2py..2py + 6, pixels
                // 2px..2px + 6 of every chunk) ends at word base + (CHUNKS
                // - 1) * 72 CH + (5 * 12 + 5) * CH / 2 + CH / 2 <= 72 C1, the
                // length of x2.
                let x = unsafe { &*x2.add(base).cast::<[u32; X2_WINDOW]>() };
                let [a, b] = conv2_pair(t, x);
                let i = 2 * g * 16 + py * 4 + px;
                // SAFETY: i + 16 < 16 C2 = FLAT halfwords, within x1.
                unsafe {
                    f1.add(i).write(act(ra, lut, OUT_ZP2, a));
                    f1.add(i + 16).write(act(rb, lut, OUT_ZP2, b));
                }
            }
        }
    }
}

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

/// The largest doubled accumulator of a pooled conv2 window, per output
/// channel of a pair: per output row `dy` the even and the odd column of
/// both channels (r0, r1 and r2, r3), the row's input starting at
/// `x[6 CH dy]`. The table `t` holds the doubled biases (A, A, B, B), then
/// per chunk and tap the first channel's weight words, then the
/// second's. The first row's sums wait on the stack; the flags tell the
/// rows apart.
#[inline(always)]
fn conv2_pair(t: &[u32; K2_LEN], x: &[u32; X2_WINDOW]) -> [i32; 2] {
    let (a, b): (i32, i32);
    // SAFETY: reads the K2_LEN words of `t` twice and, per output row,
    // tap and chunk, CH words of the even and the odd column of `x`, the
    // last at X2_WINDOW - 1; r6 and r7 are restored and the stack is
    // balanced; the pointers are pinned as in conv1.
    unsafe {
        asm!(
            "push {{r6, r7}}",
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
            "pop {{r6, r7}}",
            inout("r11") t.as_ptr() => _,
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
