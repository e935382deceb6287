//! Cortex-M4 kernels for the classic LeNet-5, equal bit for bit to
//! lenet-core's integer reference (`QuantLeNet::infer`); the QEMU test
//! checks that on all 10,000 test images.
//!
//! Legend: `C` channels, `H`/`W` rows/columns, `K` = 5 kernel side.
//!
//! The multiply-accumulates run on the M4's dual 16-bit MAC, SMLAD
//! (`acc + a.lo * b.lo + a.hi * b.hi`), through `asm!` because the DSP
//! intrinsics are nightly-only. Activations are kept as i16 *minus their
//! zero point*, two to a word, so a padded tap is a 0 and every product is
//! `w * (x - zp)` as in the reference; the int32 sums wrap like the
//! reference's `wrapping_add`. `build.rs` pre-arranges the weights
//! (`packed.rs`) to match each layout below. Requantization, activation
//! table and pooling call lenet-core's own `requantize`, `lut_index` and
//! `avg_pool_round`, so only the accumulation order differs from the
//! reference (which integer addition does not notice).

use core::arch::asm;

use lenet_core::quant::{avg_pool_round, lut_index, requantize};

#[allow(clippy::all, missing_docs)]
mod packed {
    include!(concat!(env!("OUT_DIR"), "/packed.rs"));
}
use packed::*;

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

/// Writes i16 `v` into halfword `half` (0 low, 1 high) of `word`.
#[inline(always)]
fn set_half(word: &mut u32, half: usize, v: i32) {
    let sh = 16 * half as u32;
    *word = (*word & !(0xffff << sh)) | (u32::from(v as u16) << sh);
}

/// Working memory of one inference (5.6 KB).
pub struct Scratch {
    /// conv1 input: the image padded by 2, (32, 32) i16 `p - 128 - zp_in`,
    /// two columns to a word; the border stays 0. // (H+4, (W+4)/2)
    x1: [[u32; 16]; 32],
    /// conv2 input: pooled conv1 map minus its zero point; per pixel the
    /// channel pairs (0,1) (2,3) (4,5). // (14, 14, 3)
    x2: [[[u32; 3]; 14]; 14],
    /// fc1 input (flattened pooled conv2 map, PyTorch order) minus its zero
    /// point; group `g` of four values `x0..x3` as words (x0,x2) (x1,x3),
    /// the two halves SXTB16 makes of a word of four int8 weights. // (100, 2)
    f1: [[u32; 2]; 100],
    /// fc2 input, same layout. // (30, 2)
    f2: [[u32; 2]; 30],
    /// fc3 input, same layout. // (21, 2)
    f3: [[u32; 2]; 21],
}

impl Scratch {
    /// Zeroed (can be a `static`).
    pub const fn new() -> Self {
        Self {
            x1: [[0; 16]; 32],
            x2: [[[0; 3]; 14]; 14],
            f1: [[0; 2]; 100],
            f2: [[0; 2]; 30],
            f3: [[0; 2]; 21],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Stores value `i` of a linear layer's input (minus its zero point) in the
/// grouped layout of [`Scratch::f1`].
#[inline(always)]
fn set_grouped(f: &mut [[u32; 2]], i: usize, v: i32) {
    let (g, r) = (i / 4, i % 4);
    set_half(&mut f[g][r & 1], r >> 1, v);
}

/// int8 logits of a raw 28×28 image, as `QuantLeNet5::infer`.
pub fn infer(s: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
    // Input: p - 128 - zp_in as i16, padded row iy + 2, column ix + 2.
    let off = 128 + INPUT_ZP;
    for (row, pixels) in s.x1[2..30].iter_mut().zip(image.as_chunks::<28>().0) {
        for (word, p) in row[1..15].iter_mut().zip(pixels.as_chunks::<2>().0) {
            let lo = i32::from(p[0]) - off;
            let hi = i32::from(p[1]) - off;
            *word = u32::from(lo as u16) | (u32::from(hi as u16) << 16);
        }
    }
    conv1(s);
    conv2(s);
    linear(
        &mut s.f2, &s.f1, &FC1_W, &FC1_BIAS, &FC1_MULT, &FC1_SHIFT, PRE_ZP3, &LUT3, OUT_ZP3,
    );
    linear(
        &mut s.f3, &s.f2, &FC2_W, &FC2_BIAS, &FC2_MULT, &FC2_SHIFT, PRE_ZP4, &LUT4, OUT_ZP4,
    );
    let mut logits = [0i8; 10];
    for (o, l) in logits.iter_mut().enumerate() {
        let acc = dot(&FC3_W[o], &s.f3, FC3_BIAS[o]);
        *l = requantize(acc, FC3_MULT[o], FC3_SHIFT[o], LOGITS_ZP);
    }
    logits
}

/// Requantize the four conv outputs of a 2×2 window, look them up in the
/// activation table, and average them (lenet-core's fused conv stage).
#[inline(always)]
fn act_pool(acc: [i32; 4], m: i32, sh: i32, zp: i32, lut: &[i8; 256]) -> i32 {
    let mut sum = 0;
    for a in acc {
        sum += i32::from(lut[lut_index(requantize(a, m, sh, zp))]);
    }
    avg_pool_round(sum, 4)
}

/// conv1 (1 → 6, K 5, pad 2) + act1 + avg pool 2: `x1` → `x2`.
///
/// Per pooled pixel `(py, px)` the four conv outputs at rows `2py + dy`,
/// columns `2px + dx` read padded rows `2py .. 2py + 6`, words `px .. px + 3`
/// (columns `2px .. 2px + 6`): an even column takes the words with the
/// weights W = (w0,w1) (w2,w3) (w4,0), the odd one with V = (0,w0) (w1,w2)
/// (w3,w4). Input row `r` feeds output row 0 with kernel row `r` and output
/// row 1 with kernel row `r - 1`.
fn conv1(s: &mut Scratch) {
    for co in 0..6 {
        let w = &C1_W[co]; // (K, 6)
        let (b, m, sh) = (C1_BIAS[co], C1_MULT[co], C1_SHIFT[co]);
        for py in 0..14 {
            for px in 0..14 {
                let mut acc = [b; 4];
                for r in 0..6 {
                    let x = &s.x1[2 * py + r][px..px + 3];
                    if r < 5 {
                        let k = &w[r];
                        acc[0] = smlad(smlad(smlad(acc[0], k[0], x[0]), k[1], x[1]), k[2], x[2]);
                        acc[1] = smlad(smlad(smlad(acc[1], k[3], x[0]), k[4], x[1]), k[5], x[2]);
                    }
                    if r >= 1 {
                        let k = &w[r - 1];
                        acc[2] = smlad(smlad(smlad(acc[2], k[0], x[0]), k[1], x[1]), k[2], x[2]);
                        acc[3] = smlad(smlad(smlad(acc[3], k[3], x[0]), k[4], x[1]), k[5], x[2]);
                    }
                }
                let v = act_pool(acc, m, sh, PRE_ZP1, &LUT1);
                set_half(&mut s.x2[py][px][co / 2], co % 2, v - OUT_ZP1);
            }
        }
    }
}

/// conv2 (6 → 16, K 5) + act2 + avg pool 2: `x2` → `f1` (flattened in
/// PyTorch order `co * 25 + py * 5 + px`). One SMLAD takes an input
/// channel pair at one tap.
fn conv2(s: &mut Scratch) {
    for co in 0..16 {
        let w = &C2_W[co]; // (K, K, 3)
        let (b, m, sh) = (C2_BIAS[co], C2_MULT[co], C2_SHIFT[co]);
        for py in 0..5 {
            for px in 0..5 {
                let mut acc = [b; 4];
                for (ky, w_row) in w.iter().enumerate() {
                    for (kx, k) in w_row.iter().enumerate() {
                        for (i, a) in acc.iter_mut().enumerate() {
                            let x = &s.x2[2 * py + (i >> 1) + ky][2 * px + (i & 1) + kx];
                            *a = smlad(smlad(smlad(*a, k[0], x[0]), k[1], x[1]), k[2], x[2]);
                        }
                    }
                }
                let v = act_pool(acc, m, sh, PRE_ZP2, &LUT2);
                set_grouped(&mut s.f1, co * 25 + py * 5 + px, v - OUT_ZP2);
            }
        }
    }
}

/// `bias + sum_i w[i] * x[i]` over `G` groups of four: int8 weights four
/// to a word, `x` in the grouped i16 layout.
#[inline(always)]
fn dot<const G: usize>(w: &[u32; G], x: &[[u32; 2]], bias: i32) -> i32 {
    let mut acc = bias;
    for (&q, x) in w.iter().zip(&x[..G]) {
        acc = smlad(acc, sxtb16(q), x[0]);
        acc = smlad(acc, sxtb16_ror8(q), x[1]);
    }
    acc
}

/// Linear layer + activation table: `y` (grouped, minus `out_zp`) from `x`.
#[allow(clippy::too_many_arguments)]
fn linear<const O: usize, const G: usize>(
    y: &mut [[u32; 2]],
    x: &[[u32; 2]],
    w: &[[u32; G]; O],
    bias: &[i32; O],
    mult: &[i32; O],
    shift: &[i32; O],
    pre_zp: i32,
    lut: &[i8; 256],
    out_zp: i32,
) {
    for o in 0..O {
        let acc = dot(&w[o], x, bias[o]);
        let q = lut[lut_index(requantize(acc, mult[o], shift[o], pre_zp))];
        set_grouped(y, o, i32::from(q) - out_zp);
    }
}
