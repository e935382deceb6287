//! Low-latency forward pass of one image. The batched lane kernels put
//! images in the vector lanes, which a single image would fill to 1/16;
//! here the lanes hold the 16 output channels instead (conv1's 6 padded
//! to 16), activations are `(H, W, 16)`, and the fully connected layers
//! are dot products along the input. [`forward_one`] needs 16-lane vectors
//! (AVX-512); [`forward_one8`] is the same pass for 8-lane vectors (AVX2),
//! with each group of 16 channels in two vectors (and conv2 blocked over
//! two output columns). The 4-lane baseline runs single images as a block.

use super::simd::{Act, Simd};
use super::{CLASSES, IMG, Layout, Prepared};

/// Activations of one image, channels innermost and padded to 16.
pub(crate) struct One<
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
> {
    x: [[f32; 48]; XN], // (XN, 48) zero-padded input, rows padded for 2 vector loads
    a1: [[[f32; 32]; C1]; 6], // (6, C1, 32) conv1 output, rows padded to 2 vectors
    p1: [[[f32; 16]; P1]; P1], // (P1, P1, 16)
    a2: [[[f32; 16]; C2]; C2], // (C2, C2, 16)
    p2: [[[f32; 16]; P2]; P2], // (P2, P2, 16)
    f: [f32; FL],       // (FL,) flatten in (C, H, W) order
    h1: [f32; 120],
    h2: [f32; 84],
}

impl<
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
> One<XN, C1, P1, C2, P2, FL>
{
    pub(crate) fn boxed() -> Box<Self> {
        // SAFETY: `One` is not zero-sized and holds only arrays of `f32`.
        unsafe { super::zeroed_box() }
    }

    /// Copies the 28x28 image into the middle of the zero-padded input.
    fn set_input(&mut self, img: &[f32]) {
        assert!(img.len() == IMG);
        let pad = (XN - 28) / 2;
        for (row, src) in self.x[pad..pad + 28].iter_mut().zip(img.chunks_exact(28)) {
            row[pad..pad + 28].copy_from_slice(src);
        }
    }
}

/// 2x2 pooling of `(H, W, 16)` into `(H/2, W/2, 16)`, 16 / `S::LANES`
/// vectors per position.
#[inline(always)]
fn pool<S: Simd, const MAX: bool, const H: usize, const OH: usize>(
    y: &mut [[[f32; 16]; OH]; OH],
    a: &[[[f32; 16]; H]; H],
) {
    const { assert!((S::LANES == 16 || S::LANES == 8) && H == 2 * OH) }
    for py in 0..OH {
        for px in 0..OH {
            for h in (0..16).step_by(S::LANES) {
                let v = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| S::load(&a[2 * py + dy][2 * px + dx][h..]));
                let out = if MAX {
                    S::max(S::max(v[0], v[1]), S::max(v[2], v[3]))
                } else {
                    S::mul(
                        S::add(S::add(v[0], v[1]), S::add(v[2], v[3])),
                        S::splat(0.25),
                    )
                };
                S::store(&mut y[py][px][h..], out);
            }
        }
    }
}

/// `y[o] = act(b[o] + sum_i w[o][i] x[i])`, four outputs at a time, each a
/// `CH`-wide dot product (`CH = S::LANES`) summed across lanes at the end.
#[inline(always)]
fn dense<S: Simd, A: Act, const CH: usize, const I: usize, const O: usize>(
    y: &mut [f32],
    x: &[f32; I],
    w: &[[f32; I]; O],
    b: &[f32; O],
    act: bool,
) {
    const { assert!(S::LANES == CH) }
    let (xc, xr) = x.as_chunks::<CH>();
    let hsum = |v: S::V| {
        let mut t = [0.0f32; CH];
        S::store(&mut t, v);
        t.iter().sum::<f32>()
    };
    let mut o = 0;
    while o < O {
        let nb = (O - o).min(4);
        let mut acc = [S::zero(); 4];
        if nb == 4 {
            // Four named accumulators over zipped rows: no bounds checks
            // and no loop over a run-time count, so they stay in registers.
            let r = |j: usize| w[o + j].as_chunks::<CH>().0;
            let [mut a0, mut a1, mut a2, mut a3] = acc;
            for ((((xv, w0), w1), w2), w3) in xc.iter().zip(r(0)).zip(r(1)).zip(r(2)).zip(r(3)) {
                let xv = S::load(xv);
                a0 = S::fma(S::load(w0), xv, a0);
                a1 = S::fma(S::load(w1), xv, a1);
                a2 = S::fma(S::load(w2), xv, a2);
                a3 = S::fma(S::load(w3), xv, a3);
            }
            acc = [a0, a1, a2, a3];
        } else {
            for (k, xv) in xc.iter().enumerate() {
                let xv = S::load(xv);
                for j in 0..nb {
                    acc[j] = S::fma(S::load(&w[o + j][k * CH..]), xv, acc[j]);
                }
            }
        }
        for j in 0..nb {
            let mut s = b[o + j] + hsum(acc[j]);
            for (i, xi) in xr.iter().enumerate() {
                s += w[o + j][I - xr.len() + i] * xi;
            }
            y[o + j] = if act {
                let mut t = [0.0f32; CH];
                S::store(&mut t, A::fv::<S>(S::splat(s)));
                t[0]
            } else {
                s
            };
        }
        o += nb;
    }
}

/// Forward pass of one image; writes 10 logits.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_one<
    S: Simd,
    A: Act,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut One<XN, C1, P1, C2, P2, FL>,
    prep: &Prepared,
    params: &[f32],
    img: &[f32],
    logits: &mut [f32],
) {
    const { assert!(S::LANES == 16 && FL == 16 * P2 * P2 && XN == C1 + 4 && P1 == C2 + 4) }
    assert!(logits.len() == CLASSES);
    w.set_input(img);
    // conv1: lanes along the output row (two vectors cover up to 32
    // columns), 6 channels x 2 vectors of accumulators.
    const { assert!(C1 <= 32 && XN <= 48 - 4) }
    for oy in 0..C1 {
        let mut acc: [[S::V; 2]; 6] = core::array::from_fn(|co| [S::splat(prep.b1p[co]); 2]);
        for u in 0..5 {
            let row = &w.x[oy + u];
            for v in 0..5 {
                let x0 = S::load(&row[v..]);
                let x1 = S::load(&row[v + 16..]);
                for (co, a) in acc.iter_mut().enumerate() {
                    let wv = S::splat(prep.wt1p[u][v][co]);
                    a[0] = S::fma(wv, x0, a[0]);
                    a[1] = S::fma(wv, x1, a[1]);
                }
            }
        }
        for (co, a) in acc.iter().enumerate() {
            let out = &mut w.a1[co][oy];
            S::store(&mut out[..16], A::fv::<S>(a[0]));
            S::store(&mut out[16..], A::fv::<S>(a[1]));
        }
    }
    pool1::<XN, C1, P1, C2, P2, FL, MAX>(w);
    let b2 = S::load(prep.b2::<16>());
    for oy in 0..C2 {
        for ox in 0..C2 {
            let mut acc = [S::zero(); 5];
            acc[0] = b2;
            for ci in 0..6 {
                for u in 0..5 {
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = S::fma(
                            S::splat(w.p1[oy + u][ox + v][ci]),
                            S::load(&prep.wt2::<6, 16>()[ci][u][v]),
                            *a,
                        );
                    }
                }
            }
            let s = S::add(
                S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])),
                acc[4],
            );
            S::store(&mut w.a2[oy][ox], A::fv::<S>(s));
        }
    }
    finish::<S, A, 16, XN, C1, P1, C2, P2, FL, MAX>(w, params, logits);
}

/// pool1 of conv1's `(6, C1, 32)` rows into `(P1, P1, 16)`; channels 6..
/// stay zero.
#[inline(always)]
fn pool1<
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut One<XN, C1, P1, C2, P2, FL>,
) {
    for c in 0..6 {
        for py in 0..P1 {
            let (r0, r1) = (&w.a1[c][2 * py], &w.a1[c][2 * py + 1]);
            for px in 0..P1 {
                let (a, b, d, e) = (r0[2 * px], r0[2 * px + 1], r1[2 * px], r1[2 * px + 1]);
                w.p1[py][px][c] = if MAX {
                    a.max(b).max(d.max(e))
                } else {
                    ((a + b) + (d + e)) * 0.25
                };
            }
        }
    }
}

/// pool2, flatten and the three linear layers, from conv2's output in `w.a2`.
#[inline(always)]
fn finish<
    S: Simd,
    A: Act,
    const CH: usize,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut One<XN, C1, P1, C2, P2, FL>,
    params: &[f32],
    logits: &mut [f32],
) {
    pool::<S, MAX, C2, P2>(&mut w.p2, &w.a2);
    for c in 0..16 {
        for y in 0..P2 {
            for x in 0..P2 {
                w.f[(c * P2 + y) * P2 + x] = w.p2[y][x][c];
            }
        }
    }
    let lay = Layout::new(6, 16, FL);
    let m = |a: usize, b: usize| &params[a..b];
    let w1: &[[f32; FL]; 120] = m(lay.f1w, lay.f1b).as_chunks().0.try_into().expect("fc1");
    let w2: &[[f32; 120]; 84] = m(lay.f2w, lay.f2b).as_chunks().0.try_into().expect("fc2");
    let w3: &[[f32; 84]; CLASSES] = m(lay.f3w, lay.f3b).as_chunks().0.try_into().expect("fc3");
    let b1: &[f32; 120] = m(lay.f1b, lay.f2w).try_into().expect("fc1 bias");
    let b2: &[f32; 84] = m(lay.f2b, lay.f3w).try_into().expect("fc2 bias");
    let b3: &[f32; CLASSES] = m(lay.f3b, lay.total).try_into().expect("fc3 bias");
    dense::<S, A, CH, FL, 120>(&mut w.h1, &w.f, w1, b1, true);
    dense::<S, A, CH, 120, 84>(&mut w.h2, &w.h1, w2, b2, true);
    dense::<S, A, CH, 84, CLASSES>(logits, &w.h2, w3, b3, false);
}

/// [`forward_one`] for 8-lane vectors: each 16-column half of a conv1
/// output row, and each group of 16 channels, is two vectors. conv1 and the
/// dense layers do the same operations in the same order as in
/// [`forward_one`]; conv2 runs two output columns at a time (AVX2 has half
/// the registers and is bound by loads), so its sums round differently.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_one8<
    S: Simd,
    A: Act,
    const XN: usize,
    const C1: usize,
    const P1: usize,
    const C2: usize,
    const P2: usize,
    const FL: usize,
    const MAX: bool,
>(
    w: &mut One<XN, C1, P1, C2, P2, FL>,
    prep: &Prepared,
    params: &[f32],
    img: &[f32],
    logits: &mut [f32],
) {
    const { assert!(S::LANES == 8 && FL == 16 * P2 * P2 && XN == C1 + 4 && P1 == C2 + 4) }
    assert!(logits.len() == CLASSES);
    w.set_input(img);
    // conv1: lanes along the output row, in two halves of 16 columns (two
    // vectors each), 6 channels x 2 vectors of accumulators per half.
    const { assert!(C1 <= 32 && XN <= 48 - 4) }
    for oy in 0..C1 {
        for half in [0, 16] {
            let mut acc: [[S::V; 2]; 6] = core::array::from_fn(|co| [S::splat(prep.b1p[co]); 2]);
            for u in 0..5 {
                let row = &w.x[oy + u];
                for v in 0..5 {
                    let x0 = S::load(&row[half + v..]);
                    let x1 = S::load(&row[half + v + 8..]);
                    for (co, a) in acc.iter_mut().enumerate() {
                        let wv = S::splat(prep.wt1p[u][v][co]);
                        a[0] = S::fma(wv, x0, a[0]);
                        a[1] = S::fma(wv, x1, a[1]);
                    }
                }
            }
            for (co, a) in acc.iter().enumerate() {
                let out = &mut w.a1[co][oy][half..];
                S::store(&mut out[..8], A::fv::<S>(a[0]));
                S::store(&mut out[8..], A::fv::<S>(a[1]));
            }
        }
    }
    pool1::<XN, C1, P1, C2, P2, FL, MAX>(w);
    // conv2: 16 output channels in two vectors, two output columns at a
    // time so that each weight load feeds four FMAs, and two partial sums
    // per column and half (even and odd kernel columns).
    const { assert!(C2.is_multiple_of(2)) }
    let b2 = [
        S::load(&prep.b2::<16>()[..]),
        S::load(&prep.b2::<16>()[8..]),
    ];
    let wt2 = prep.wt2::<6, 16>();
    for oy in 0..C2 {
        for ox in (0..C2).step_by(2) {
            // acc[column][chain][half]
            let mut acc = [[[S::zero(); 2]; 2]; 2];
            acc[0][0] = b2;
            acc[1][0] = b2;
            for (ci, wc) in wt2.iter().enumerate() {
                for (u, wu) in wc.iter().enumerate() {
                    let row = &w.p1[oy + u];
                    for (v, wt) in wu.iter().enumerate() {
                        let (w0, w1) = (S::load(&wt[..]), S::load(&wt[8..]));
                        for (c, a) in acc.iter_mut().enumerate() {
                            let xs = S::splat(row[ox + c + v][ci]);
                            let k = &mut a[v % 2];
                            k[0] = S::fma(xs, w0, k[0]);
                            k[1] = S::fma(xs, w1, k[1]);
                        }
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                for (h, out) in w.a2[oy][ox + c].chunks_exact_mut(8).enumerate() {
                    S::store(out, A::fv::<S>(S::add(a[0][h], a[1][h])));
                }
            }
        }
    }
    finish::<S, A, 8, XN, C1, P1, C2, P2, FL, MAX>(w, params, logits);
}
