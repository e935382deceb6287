//! Lane kernels: every tensor holds a block of `L` images in its innermost
//! dimension, so `[[[[f32; L]; W]; H]; C]` is `(C, H, W, L)`. Each scalar
//! formula of the `lenet-core` reference becomes one `L`-wide vector
//! operation ([`Simd`]) with no shuffles, no im2col and no packing; the
//! loops keep the accumulators of one output position (or one group of
//! weights) in registers while the inputs stream past.
//!
//! Legend: `C` channels (`CI` in, `CO` out), `H`/`W` rows/columns, `K`
//! kernel side, `OH`/`OW` output rows/columns, `L` images per vector.
//!
//! All kernels are `#[inline(always)]`: they are compiled inside the
//! `#[target_feature]` entry points of [`super`].

use super::simd::{Act, Simd};

/// One value per image of the block: `(L,)`.
pub(crate) type V<const L: usize> = [f32; L];

/// Convolution (stride 1, input already zero-padded), bias and activation
/// fused: `y[co][oy][ox] = act(b[co] + sum_{ci,u,v} w[co][ci][u][v] * x[ci][oy+u][ox+v])`.
///
/// `wt` is the weight transposed to `(CI, K, K, CO)` so that the `CO`
/// weights of one tap are contiguous. `CB` output channels (a divisor of
/// `CO`) are accumulated in registers per pass over the input window.
#[inline(always)]
pub(crate) fn conv_fwd<
    S: Simd,
    A: Act,
    const L: usize,
    const CB: usize,
    const CI: usize,
    const CO: usize,
    const K: usize,
    const IH: usize,
    const IW: usize,
    const OH: usize,
    const OW: usize,
>(
    y: &mut [[[V<L>; OW]; OH]; CO], // (CO, OH, OW, L)
    x: &[[[V<L>; IW]; IH]; CI],     // (CI, IH, IW, L)
    wt: &[[[[f32; CO]; K]; K]; CI], // (CI, K, K, CO)
    b: &[f32; CO],                  // (CO,)
) {
    const { assert!(S::LANES == L && IH == OH + K - 1 && IW == OW + K - 1) }
    // Runtime check, as in `conv_dw`.
    assert!(CO.is_multiple_of(CB));
    for oy in 0..OH {
        for ox in 0..OW {
            for c0 in (0..CO).step_by(CB) {
                let mut acc: [S::V; CB] = core::array::from_fn(|c| S::splat(b[c0 + c]));
                for ci in 0..CI {
                    for u in 0..K {
                        for v in 0..K {
                            let xv = S::load(&x[ci][oy + u][ox + v]);
                            let wr = &wt[ci][u][v][c0..c0 + CB];
                            for c in 0..CB {
                                acc[c] = S::fma(S::splat(wr[c]), xv, acc[c]);
                            }
                        }
                    }
                }
                for c in 0..CB {
                    S::store(&mut y[c0 + c][oy][ox], A::fv::<S>(acc[c]));
                }
            }
        }
    }
}

/// Weight gradient of [`conv_fwd`], accumulated per lane (the caller sums
/// the lanes once per step):
/// `dw[co][ci][u][v][l] += sum_{oy,ox} dy[co][oy][ox][l] * x[ci][oy+u][ox+v][l]`.
///
/// `CB` output channels times the `K` taps of one kernel row are kept in
/// registers while the output positions stream past.
#[inline(always)]
pub(crate) fn conv_dw<
    S: Simd,
    const L: usize,
    const CB: usize,
    const CI: usize,
    const CO: usize,
    const K: usize,
    const IH: usize,
    const IW: usize,
    const OH: usize,
    const OW: usize,
>(
    dw: &mut [[[[V<L>; K]; K]; CI]; CO], // (CO, CI, K, K, L)
    dy: &[[[V<L>; OW]; OH]; CO],         // (CO, OH, OW, L)
    x: &[[[V<L>; IW]; IH]; CI],          // (CI, IH, IW, L)
) {
    const { assert!(S::LANES == L && IH == OH + K - 1 && IW == OW + K - 1) }
    // A runtime check: callers pick `CB` by a test on `CO` that the
    // compiler folds, and the branch not taken must still compile.
    assert!(CO.is_multiple_of(CB));
    for ci in 0..CI {
        for u in 0..K {
            for c0 in (0..CO).step_by(CB) {
                let mut acc: [[S::V; K]; CB] = [[S::zero(); K]; CB];
                for oy in 0..OH {
                    let xrow = &x[ci][oy + u];
                    for ox in 0..OW {
                        let d: [S::V; CB] = core::array::from_fn(|c| S::load(&dy[c0 + c][oy][ox]));
                        for v in 0..K {
                            let xv = S::load(&xrow[ox + v]);
                            for c in 0..CB {
                                acc[c][v] = S::fma(d[c], xv, acc[c][v]);
                            }
                        }
                    }
                }
                for c in 0..CB {
                    for v in 0..K {
                        let g = &mut dw[c0 + c][ci][u][v];
                        let sum = S::add(S::load(g), acc[c][v]);
                        S::store(g, sum);
                    }
                }
            }
        }
    }
}

/// Bias gradient, per lane: `db[c][l] += sum_{y,x} dy[c][y][x][l]`.
#[inline(always)]
pub(crate) fn bias_grad<S: Simd, const L: usize, const C: usize, const H: usize, const W: usize>(
    db: &mut [V<L>; C],       // (C, L)
    dy: &[[[V<L>; W]; H]; C], // (C, H, W, L)
) {
    const { assert!(S::LANES == L) }
    for c in 0..C {
        let mut acc = [S::zero(); 2];
        for (i, px) in dy[c].as_flattened().iter().enumerate() {
            acc[i % 2] = S::add(acc[i % 2], S::load(px));
        }
        let sum = S::add(S::load(&db[c]), S::add(acc[0], acc[1]));
        S::store(&mut db[c], sum);
    }
}

/// Input gradient of [`conv_fwd`] (stride 1, no padding), overwriting `dx`:
/// `dx[ci][iy][ix] = sum_{co,u,v} w[co][ci][u][v] * dy[co][iy-u][ix-v]`
/// over the terms whose `dy` index lies inside the output.
///
/// `wd` is the weight transposed to `(CO, K, K, CI)`; `IB` input channels
/// (a divisor of `CI`) are accumulated in registers per pass.
#[inline(always)]
pub(crate) fn conv_dx<
    S: Simd,
    const L: usize,
    const IB: usize,
    const CI: usize,
    const CO: usize,
    const K: usize,
    const IH: usize,
    const IW: usize,
    const OH: usize,
    const OW: usize,
>(
    dx: &mut [[[V<L>; IW]; IH]; CI], // (CI, IH, IW, L)
    dy: &[[[V<L>; OW]; OH]; CO],     // (CO, OH, OW, L)
    wd: &[[[[f32; CI]; K]; K]; CO],  // (CO, K, K, CI)
) {
    const { assert!(S::LANES == L && IH == OH + K - 1 && IW == OW + K - 1) }
    // Runtime check, as in `conv_dw`.
    assert!(CI.is_multiple_of(IB));
    for iy in 0..IH {
        let u_lo = (iy + 1).saturating_sub(OH);
        let u_hi = iy.min(K - 1);
        for ix in 0..IW {
            let v_lo = (ix + 1).saturating_sub(OW);
            let v_hi = ix.min(K - 1);
            for i0 in (0..CI).step_by(IB) {
                let mut acc = [S::zero(); IB];
                for co in 0..CO {
                    for u in u_lo..=u_hi {
                        for v in v_lo..=v_hi {
                            let d = S::load(&dy[co][iy - u][ix - v]);
                            let wr = &wd[co][u][v][i0..i0 + IB];
                            for i in 0..IB {
                                acc[i] = S::fma(S::splat(wr[i]), d, acc[i]);
                            }
                        }
                    }
                }
                for i in 0..IB {
                    S::store(&mut dx[i0 + i][iy][ix], acc[i]);
                }
            }
        }
    }
}

/// 2x2 pooling, stride 2 (average when `!MAX`, max otherwise):
/// `y[c][py][px] = pool(x[c][2py..2py+2][2px..2px+2])`.
#[inline(always)]
pub(crate) fn pool2_fwd<
    S: Simd,
    const L: usize,
    const MAX: bool,
    const C: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>(
    y: &mut [[[V<L>; OW]; OH]; C], // (C, OH, OW, L)
    x: &[[[V<L>; W]; H]; C],       // (C, H, W, L)
) {
    const { assert!(S::LANES == L && H == 2 * OH && W == 2 * OW) }
    for c in 0..C {
        for py in 0..OH {
            for px in 0..OW {
                let (r0, r1) = (&x[c][2 * py], &x[c][2 * py + 1]);
                let a = S::load(&r0[2 * px]);
                let b = S::load(&r0[2 * px + 1]);
                let d = S::load(&r1[2 * px]);
                let e = S::load(&r1[2 * px + 1]);
                let out = if MAX {
                    S::max(S::max(a, b), S::max(d, e))
                } else {
                    S::mul(S::add(S::add(a, b), S::add(d, e)), S::splat(0.25))
                };
                S::store(&mut y[c][py][px], out);
            }
        }
    }
}

/// Backward of [`pool2_fwd`] fused with the activation derivative of the
/// layer before it, overwriting `dz`:
/// average: `dz[c][y][x] = dp[c][y/2][x/2] / 4 * act'(a[c][y][x])`;
/// max: `dz = dp` at the first maximum of each window in scan order (as
/// PyTorch), else 0, times `act'(a)`.
#[inline(always)]
pub(crate) fn pool2_act_bwd<
    S: Simd,
    A: Act,
    const L: usize,
    const MAX: bool,
    const C: usize,
    const H: usize,
    const W: usize,
    const OH: usize,
    const OW: usize,
>(
    dz: &mut [[[V<L>; W]; H]; C], // (C, H, W, L)
    dp: &[[[V<L>; OW]; OH]; C],   // (C, OH, OW, L)
    a: &[[[V<L>; W]; H]; C],      // (C, H, W, L) activation output
    p: &[[[V<L>; OW]; OH]; C],    // (C, OH, OW, L) pooled output
) {
    const { assert!(S::LANES == L && H == 2 * OH && W == 2 * OW) }
    for c in 0..C {
        for py in 0..OH {
            for px in 0..OW {
                let g = S::load(&dp[c][py][px]);
                // A NaN never compares equal: once a lane has taken its
                // maximum, later equal values in the window get nothing.
                let mut m = S::load(&p[c][py][px]);
                let g4 = S::mul(g, S::splat(0.25));
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (y, x) = (2 * py + dy, 2 * px + dx);
                    let av = S::load(&a[c][y][x]);
                    let d = A::dfv::<S>(av);
                    let out = if MAX {
                        let hit = S::select_eq(av, m, S::mul(g, d), S::zero());
                        m = S::select_eq(av, m, S::splat(f32::NAN), m);
                        hit
                    } else {
                        S::mul(g4, d)
                    };
                    S::store(&mut dz[c][y][x], out);
                }
            }
        }
    }
}

/// Fully connected layer, `OB` outputs per register block:
/// `y[o] = act(b[o] + sum_i w[o][i] x[i])` (no activation when `!act`).
#[inline(always)]
pub(crate) fn linear_fwd<
    S: Simd,
    A: Act,
    const L: usize,
    const OB: usize,
    const I: usize,
    const O: usize,
>(
    y: &mut [V<L>; O], // (O, L)
    x: &[V<L>; I],     // (I, L)
    w: &[[f32; I]; O], // (O, I)
    b: &[f32; O],      // (O,)
    act: bool,
) {
    const { assert!(S::LANES == L && O.is_multiple_of(OB)) }
    for o0 in (0..O).step_by(OB) {
        let mut acc: [S::V; OB] = core::array::from_fn(|j| S::splat(b[o0 + j]));
        for i in 0..I {
            let xv = S::load(&x[i]);
            for j in 0..OB {
                acc[j] = S::fma(S::splat(w[o0 + j][i]), xv, acc[j]);
            }
        }
        for j in 0..OB {
            let v = if act { A::fv::<S>(acc[j]) } else { acc[j] };
            S::store(&mut y[o0 + j], v);
        }
    }
}

/// Input gradient of a fully connected layer, `IB` inputs per register
/// block, overwriting `dx`: `dx[i] = sum_o w[o][i] dy[o]`; then, when `act`,
/// times the derivative of the activation whose output is `xa`:
/// `dx[i] *= act'(xa[i])`.
#[inline(always)]
pub(crate) fn linear_dx<
    S: Simd,
    A: Act,
    const L: usize,
    const IB: usize,
    const I: usize,
    const O: usize,
>(
    dx: &mut [V<L>; I], // (I, L)
    dy: &[V<L>; O],     // (O, L)
    w: &[[f32; I]; O],  // (O, I)
    xa: &[V<L>; I],     // (I, L)
    act: bool,
) {
    const { assert!(S::LANES == L && I.is_multiple_of(IB)) }
    for i0 in (0..I).step_by(IB) {
        let mut acc = [S::zero(); IB];
        for o in 0..O {
            let d = S::load(&dy[o]);
            let wr = &w[o][i0..i0 + IB];
            for j in 0..IB {
                acc[j] = S::fma(S::splat(wr[j]), d, acc[j]);
            }
        }
        for j in 0..IB {
            let v = if act {
                S::mul(acc[j], A::dfv::<S>(S::load(&xa[i0 + j])))
            } else {
                acc[j]
            };
            S::store(&mut dx[i0 + j], v);
        }
    }
}

/// Softmax cross-entropy of each lane against its label, writing
/// `dz[k][l] = scale * (softmax(z)[k] - [k == t_l])` (zero for lanes at or
/// beyond `labels.len()`) and returning the summed loss of the valid lanes.
#[inline(always)]
pub(crate) fn softmax_xent<S: Simd, const L: usize, const K: usize>(
    dz: &mut [V<L>; K], // (K, L)
    z: &[V<L>; K],      // (K, L)
    labels: &[u8],      // (valid,)
    scale: f32,
) -> f64 {
    const { assert!(S::LANES == L) }
    let valid = labels.len();
    let mut m = S::load(&z[0]);
    for zk in &z[1..] {
        m = S::max(m, S::load(zk));
    }
    let mut s = S::zero();
    for k in 0..K {
        let e = S::exp(S::sub(S::load(&z[k]), m));
        S::store(&mut dz[k], e);
        s = S::add(s, e);
    }
    let mut ms = [0.0f32; L];
    let mut ss = [0.0f32; L];
    S::store(&mut ms, m);
    S::store(&mut ss, s);
    let mut loss = 0.0f64;
    for l in 0..L {
        if l < valid {
            let t = labels[l] as usize;
            loss += f64::from(ss[l].ln() + ms[l] - z[t][l]);
            let inv = scale / ss[l];
            for (k, d) in dz.iter_mut().enumerate() {
                d[l] = d[l] * inv - if k == t { scale } else { 0.0 };
            }
        } else {
            for d in dz.iter_mut() {
                d[l] = 0.0;
            }
        }
    }
    loss
}
