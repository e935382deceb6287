//! The fully connected tail every model shares: fc1 + act3, fc2 + act4,
//! fc3, on the M4's dual MAC.

use core::arch::asm;

use super::Scratch;
use super::dsp::{smlad, sxtb16, sxtb16_ror8};
use super::packed;
use super::requant::{Lut, Requant};

/// fc1 + act3, fc2 + act4 and fc3, the same in every model: int8 logits
/// from `fc1_in` (the flattened pooled conv2 map minus its zero point, i16
/// two to a word). `x2` (conv2's input, read by now) takes fc2's input in
/// words 0..60 and fc3's in 60..102, where [`trunk_output`] finds them.
#[inline(always)]
pub(super) fn fc_tail(x2: &mut [u32], fc1_in: &[u32]) -> [i8; 10] {
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
