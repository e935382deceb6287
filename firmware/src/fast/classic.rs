//! The classic LeNet-5's convolutions, activations and 2×2 average
//! pooling (see the module above for the data layout and the registers).

use core::arch::asm;

use super::ConvTable;
use super::dsp::{ssub16, uxtb16, uxtb16_ror8};
use super::linear::fc_tail;
use super::packed::*;

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
    pub(super) x2: [u32; 14 * 14 * 3],
}

impl Scratch {
    /// Zeroed (can be a `static`).
    pub const fn new() -> Self {
        Self {
            x1: [0; 32 * 16],
            x2: [0; 14 * 14 * 3],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

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

/// The end of the conv kernels: requantizes the four doubled accumulators
/// of two channels (r0, r1 of the first, r2, r3 of the second) with the
/// constants at the table pointer r11 (per channel the multiplier,
/// `2^(e-1) + ((zp + 128) << e)` and `e`: [`Requant`](super::requant::Requant) with the table offset
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

/// [`act_pair_lut`] for an identity activation table (`build.rs` checks
/// every entry): the constants are [`Requant`](super::requant::Requant)'s, SSAT gives the value;
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

#[cfg(lenet_act1_id)]
macro_rules! act1 {
    () => {
        act_triple_id!()
    };
}
#[cfg(not(lenet_act1_id))]
macro_rules! act1 {
    () => {
        act_triple_lut!()
    };
}
#[cfg(lenet_act2_id)]
macro_rules! act2 {
    () => {
        act_pair_id!()
    };
}
#[cfg(not(lenet_act2_id))]
macro_rules! act2 {
    () => {
        act_pair_lut!()
    };
}

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

/// lenet-core's 2×2 average of four activations summing to `sum`, less
/// the output zero point `zp`: `avg_pool_round(sum, 4)` is `(sum + 2 +
/// (sum >> 31)) >> 2` (`build.rs` checks it on every sum), and
/// subtracting `zp` after the shift is subtracting `4 zp` before.
#[inline(always)]
fn pool(sum: i32, zp: i32) -> i32 {
    (sum + (2 - 4 * zp) + (sum >> 31)) >> 2
}

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
