//! lenet-core against PyTorch: every record of `tests/golden/ops.bin` and
//! `tests/golden/lenet.bin` (written by `tests/golden/gen_golden.py`) is run
//! through the core operators and compared with `assert_close`.
//!
//! Tolerances are per group (see the table in `tests/golden/README.md`);
//! run with `-- --nocapture` to see the worst error of every comparison.

mod common;

use common::{
    Golden, GoldenExt, RecordExt, Worst, assert_close, assert_record, fill, with_big_stack,
};
use lenet_core::activation::Activation;
use lenet_core::{Padding, Stride, Window};
use std::sync::OnceLock;

fn ops() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden::load("ops.bin"))
}

fn lenet() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden::load("lenet.bin"))
}

// Flat views of nested arrays.
fn f2<const A: usize, const B: usize>(x: &[[f32; A]; B]) -> &[f32] {
    x.as_flattened()
}
fn f3<const A: usize, const B: usize, const C: usize>(x: &[[[f32; A]; B]; C]) -> &[f32] {
    x.as_flattened().as_flattened()
}
fn f3m<const A: usize, const B: usize, const C: usize>(x: &mut [[[f32; A]; B]; C]) -> &mut [f32] {
    x.as_flattened_mut().as_flattened_mut()
}
fn f4<const A: usize, const B: usize, const C: usize, const D: usize>(
    x: &[[[[f32; A]; B]; C]; D],
) -> &[f32] {
    x.as_flattened().as_flattened().as_flattened()
}
fn f4m<const A: usize, const B: usize, const C: usize, const D: usize>(
    x: &mut [[[[f32; A]; B]; C]; D],
) -> &mut [f32] {
    x.as_flattened_mut().as_flattened_mut().as_flattened_mut()
}

/// Checks that a config record equals the const parameters the test
/// instantiated, so a renamed or edited config cannot silently go untested.
fn check_cfg(g: &Golden, name: &str, want: &[usize]) {
    let cfg = g.get(name);
    let got: Vec<usize> = cfg.data.iter().map(|&v| v as usize).collect();
    assert_eq!(
        got, want,
        "{name}: the test's const parameters do not match the golden config ({})",
        cfg.source
    );
}

/// Checks that the test covers exactly the configs the golden file holds.
fn check_covered(g: &Golden, group: &str, tested: &[&str]) {
    let mut in_file = g.children(group);
    let mut t: Vec<String> = tested.iter().map(|s| (*s).to_owned()).collect();
    in_file.sort();
    t.sort();
    assert_eq!(
        in_file, t,
        "{group}: configs in the golden file and configs tested differ"
    );
}

// ---------------------------------------------------------------- tolerances
//
// `|got - want| <= atol + rtol * |want|`, per group. Keep in step with the
// table in tests/golden/README.md.

/// conv2d forward and backward: sums of up to 150 products of O(1) values.
const CONV_TOL: (f32, f32) = (1e-5, 1e-5);
/// Pooling: max is exact; avg sums at most 9 values and divides.
const POOL_TOL: (f32, f32) = (1e-6, 1e-5);
/// linear forward and backward: sums of up to 84 products.
const LINEAR_TOL: (f32, f32) = (1e-5, 1e-5);
/// Element-wise activations and softmax: one libm call each.
const ACT_TOL: (f32, f32) = (1e-6, 1e-5);
/// Losses and their gradients.
const LOSS_TOL: (f32, f32) = (1e-6, 1e-5);
/// Optimizer steps on a 20-vector (a few steps, f32 state).
const OPTIM_TOL: (f32, f32) = (1e-6, 1e-5);
/// Bilinear upsampling: two multiply-adds per direction forward, at most a
/// few dozen weighted terms per input pixel backward (224 / 28 = 8 outputs
/// per input pixel and side).
const UPSAMPLE_TOL: (f32, f32) = (1e-6, 1e-5);
/// LeNet-5 forward (logits, loss) and gradients.
const MODEL_TOL: (f32, f32) = (1e-6, 1e-5);
/// LeNet-5 after 10 Adam / 5 SGD steps: losses and final weights.
const TRAIN_TOL: (f32, f32) = (1e-6, 1e-5);
/// The same for the 16/32-channel LeNet, as for the host trainer: Adam's
/// first steps are about `lr * sign(g)`, so a weight whose gradient is
/// float noise (12,800 conv2 weights here) can end up a few 1e-6 away.
const WIDE_TRAIN_TOL: (f32, f32) = (1e-5, 1e-5);

// ---------------------------------------------------------------- conv2d

/// conv2d + conv2d_backward for one golden config, and the same numbers
/// through the single-channel corr2d / corr2d_backward and corr2d_multi_in.
#[allow(clippy::too_many_lines)]
fn check_conv<
    const N: usize,
    const CI: usize,
    const CO: usize,
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    name: &str,
) -> Worst {
    use lenet_core::conv::{conv2d, conv2d_backward, corr2d, corr2d_backward, corr2d_multi_in};
    let g = ops();
    let p = format!("conv2d/{name}");
    let bias = g.has(&format!("{p}/b"));
    check_cfg(
        g,
        &format!("{p}/cfg"),
        &[N, CI, CO, H, W, KH, KW, PH, PW, SH, SW, usize::from(bias)],
    );
    let (atol, rtol) = CONV_TOL;
    let rec = |s: &str| g.get(&format!("{p}/{s}"));
    let xs = rec("x");
    xs.shaped(&[N, CI, H, W]);
    let mut w = [[[[0.0f32; KW]; KH]; CI]; CO];
    fill(f4m(&mut w), rec("w").shaped(&[CO, CI, KH, KW]), "w");
    let b: Option<[f32; CO]> = bias.then(|| rec("b").shaped(&[CO]).try_into().unwrap());
    let dys = rec("dy");
    dys.shaped(&[N, CO, OH, OW]);

    let mut y_all = Vec::new();
    let mut dx_all = Vec::new();
    let mut dw = [[[[0.0f32; KW]; KH]; CI]; CO];
    let mut db = [0.0f32; CO];
    // Second route: corr2d per (out, in) channel pair, corr2d_multi_in per out channel.
    let mut y2_all = Vec::new();
    let mut y3_all = Vec::new();
    let mut dx2_all = Vec::new();
    let mut dw2 = [[[[0.0f32; KW]; KH]; CI]; CO];
    for n in 0..N {
        let mut x = [[[0.0f32; W]; H]; CI];
        fill(f3m(&mut x), xs.item(n), "x");
        let mut dy = [[[0.0f32; OW]; OH]; CO];
        fill(f3m(&mut dy), dys.item(n), "dy");

        let mut y = [[[f32::NAN; OW]; OH]; CO];
        conv2d(
            &mut y,
            &x,
            &w,
            b.as_ref(),
            Padding::<PH, PW>,
            Stride::<SH, SW>,
        );
        y_all.extend_from_slice(f3(&y));
        let mut dx = [[[0.0f32; W]; H]; CI];
        conv2d_backward(
            Some(&mut dx),
            &mut dw,
            bias.then_some(&mut db),
            &dy,
            &x,
            &w,
            Padding::<PH, PW>,
            Stride::<SH, SW>,
        );
        dx_all.extend_from_slice(f3(&dx));

        let mut dx2 = [[[0.0f32; W]; H]; CI];
        for o in 0..CO {
            let bo = b.map_or(0.0, |b| b[o]);
            let mut acc = [[bo; OW]; OH];
            for i in 0..CI {
                let mut t = [[f32::NAN; OW]; OH];
                corr2d(&mut t, &x[i], &w[o][i], Padding::<PH, PW>, Stride::<SH, SW>);
                for (a, t) in acc.as_flattened_mut().iter_mut().zip(t.as_flattened()) {
                    *a += t;
                }
                corr2d_backward(
                    Some(&mut dx2[i]),
                    &mut dw2[o][i],
                    &dy[o],
                    &x[i],
                    &w[o][i],
                    Padding::<PH, PW>,
                    Stride::<SH, SW>,
                );
            }
            y2_all.extend_from_slice(f2(&acc));
            let mut t = [[f32::NAN; OW]; OH];
            corr2d_multi_in(&mut t, &x, &w[o], Padding::<PH, PW>, Stride::<SH, SW>);
            y3_all.extend(t.as_flattened().iter().map(|v| v + bo));
        }
        dx2_all.extend_from_slice(f3(&dx2));
    }
    let mut worst = assert_record(&y_all, rec("y"), atol, rtol);
    worst = worst.max(assert_record(&dx_all, rec("dx"), atol, rtol));
    worst = worst.max(assert_record(f4(&dw), rec("dw"), atol, rtol));
    if bias {
        worst = worst.max(assert_record(&db, rec("db"), atol, rtol));
    } else {
        assert_eq!(db, [0.0; CO], "{p}: db must stay untouched without bias");
    }
    let tag = |s: &str| format!("{p}/{s} via corr2d");
    worst = worst.max(assert_close(&tag("y"), &y2_all, &rec("y").data, atol, rtol));
    worst = worst.max(assert_close(
        &format!("{p}/y via corr2d_multi_in"),
        &y3_all,
        &rec("y").data,
        atol,
        rtol,
    ));
    worst = worst.max(assert_close(
        &tag("dx"),
        &dx2_all,
        &rec("dx").data,
        atol,
        rtol,
    ));
    worst = worst.max(assert_close(
        &tag("dw"),
        f4(&dw2),
        &rec("dw").data,
        atol,
        rtol,
    ));
    worst
}

#[test]
fn conv2d_matches_pytorch() {
    // name, then N, CI, CO, H, W, KH, KW, PH, PW, SH, SW, OH, OW
    macro_rules! configs {
        ($($name:literal: $($c:literal),+;)+) => {{
            let mut w = Worst::default();
            $( w = w.max(check_conv::<$($c),+>($name)); )+
            check_covered(ops(), "conv2d", &[$($name),+]);
            w
        }};
    }
    let worst = configs! {
        "k3_single": 2, 1, 1, 5, 5, 3, 3, 0, 0, 1, 1, 3, 3;
        "pad_multi": 2, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, 7, 6;
        "stride2_nobias": 2, 2, 3, 9, 8, 3, 3, 1, 1, 2, 2, 5, 4;
        "nonsquare": 2, 2, 2, 8, 7, 2, 4, 1, 2, 2, 1, 5, 8;
        "uneven_stride": 2, 1, 2, 10, 9, 3, 5, 0, 2, 3, 2, 3, 5;
        "k1": 2, 4, 3, 5, 5, 1, 1, 0, 0, 1, 1, 5, 5;
        "k1_s2_nobias": 2, 3, 2, 6, 5, 1, 1, 0, 0, 2, 2, 3, 3;
        "lenet_c1": 2, 1, 6, 28, 28, 5, 5, 2, 2, 1, 1, 28, 28;
        "lenet_c2": 2, 6, 16, 14, 14, 5, 5, 0, 0, 1, 1, 10, 10;
        "k3_p1_multi": 2, 4, 8, 10, 9, 3, 3, 1, 1, 1, 1, 10, 9;
        "k11_s4_p1": 2, 1, 6, 65, 65, 11, 11, 1, 1, 4, 4, 15, 15;
        "k5_p2": 2, 6, 16, 7, 7, 5, 5, 2, 2, 1, 1, 7, 7;
    };
    println!("conv2d worst: {worst:?}");
}

// ---------------------------------------------------------------- pooling

/// max_pool2d (+ argmax) and avg_pool2d, forward and backward, for one
/// golden config.
fn check_pool<
    const N: usize,
    const C: usize,
    const H: usize,
    const W: usize,
    const KH: usize,
    const KW: usize,
    const PH: usize,
    const PW: usize,
    const SH: usize,
    const SW: usize,
    const OH: usize,
    const OW: usize,
>(
    name: &str,
) -> Worst {
    use lenet_core::pool::{avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward};
    let g = ops();
    let (atol, rtol) = POOL_TOL;
    let mut worst = Worst::default();
    for kind in ["max", "avg"] {
        let p = format!("{kind}_pool2d/{name}");
        check_cfg(
            g,
            &format!("{p}/cfg"),
            &[N, C, H, W, KH, KW, PH, PW, SH, SW],
        );
        let rec = |s: &str| g.get(&format!("{p}/{s}"));
        let xs = rec("x");
        xs.shaped(&[N, C, H, W]);
        let dys = rec("dy");
        dys.shaped(&[N, C, OH, OW]);
        let (mut y_all, mut dx_all, mut idx_all) = (Vec::new(), Vec::new(), Vec::new());
        for n in 0..N {
            let mut x = [[[0.0f32; W]; H]; C];
            fill(f3m(&mut x), xs.item(n), "x");
            let mut dy = [[[0.0f32; OW]; OH]; C];
            fill(f3m(&mut dy), dys.item(n), "dy");
            let mut y = [[[f32::NAN; OW]; OH]; C];
            let mut dx = [[[0.0f32; W]; H]; C];
            if kind == "max" {
                let mut argmax = [[[u16::MAX; OW]; OH]; C];
                max_pool2d(
                    &mut y,
                    &mut argmax,
                    &x,
                    Window::<KH, KW>,
                    Padding::<PH, PW>,
                    Stride::<SH, SW>,
                );
                max_pool2d_backward(&mut dx, &dy, &argmax);
                idx_all.extend(
                    argmax
                        .as_flattened()
                        .as_flattened()
                        .iter()
                        .map(|&i| f32::from(i)),
                );
            } else {
                avg_pool2d(
                    &mut y,
                    &x,
                    Window::<KH, KW>,
                    Padding::<PH, PW>,
                    Stride::<SH, SW>,
                );
                avg_pool2d_backward(
                    &mut dx,
                    &dy,
                    Window::<KH, KW>,
                    Padding::<PH, PW>,
                    Stride::<SH, SW>,
                );
            }
            y_all.extend_from_slice(f3(&y));
            dx_all.extend_from_slice(f3(&dx));
        }
        worst = worst.max(assert_record(&y_all, rec("y"), atol, rtol));
        worst = worst.max(assert_record(&dx_all, rec("dx"), atol, rtol));
        if kind == "max" {
            // Indices are integers: exact.
            assert_record(&idx_all, rec("argmax"), 0.0, 0.0);
        }
    }
    worst
}

#[test]
fn pool2d_matches_pytorch() {
    // name, then N, C, H, W, KH, KW, PH, PW, SH, SW, OH, OW
    macro_rules! configs {
        ($($name:literal: $($c:literal),+;)+) => {{
            let mut w = Worst::default();
            $( w = w.max(check_pool::<$($c),+>($name)); )+
            check_covered(ops(), "max_pool2d", &[$($name),+]);
            check_covered(ops(), "avg_pool2d", &[$($name),+]);
            w
        }};
    }
    let worst = configs! {
        "w2_s2": 2, 2, 6, 6, 2, 2, 0, 0, 2, 2, 3, 3;
        "w3_s2_p1": 2, 2, 7, 7, 3, 3, 1, 1, 2, 2, 4, 4;
        "w3_s1_overlap": 2, 2, 5, 5, 3, 3, 0, 0, 1, 1, 3, 3;
        "nonsquare": 2, 3, 7, 9, 2, 3, 1, 1, 1, 2, 8, 5;
        "floor_tail": 2, 1, 7, 8, 3, 2, 0, 1, 2, 3, 3, 3;
        "lenet_p1": 2, 6, 24, 24, 2, 2, 0, 0, 2, 2, 12, 12;
        "lenet_p2": 2, 16, 8, 8, 2, 2, 0, 0, 2, 2, 4, 4;
        "w3_s2_overlap": 2, 3, 15, 13, 3, 3, 0, 0, 2, 2, 7, 6;
    };
    println!("pool2d worst: {worst:?}");
}

// ---------------------------------------------------------------- linear

fn check_linear<const N: usize, const I: usize, const O: usize>(name: &str) -> Worst {
    use lenet_core::linear::{linear, linear_backward};
    let g = ops();
    let p = format!("linear/{name}");
    let bias = g.has(&format!("{p}/b"));
    check_cfg(g, &format!("{p}/cfg"), &[N, I, O, usize::from(bias)]);
    let rec = |s: &str| g.get(&format!("{p}/{s}"));
    let (atol, rtol) = LINEAR_TOL;
    let mut w = [[0.0f32; I]; O];
    fill(w.as_flattened_mut(), rec("w").shaped(&[O, I]), "w");
    let b: Option<[f32; O]> = bias.then(|| rec("b").shaped(&[O]).try_into().unwrap());
    let xs = rec("x");
    xs.shaped(&[N, I]);
    let dys = rec("dy");
    dys.shaped(&[N, O]);
    let (mut y_all, mut dx_all) = (Vec::new(), Vec::new());
    let mut dw = [[0.0f32; I]; O];
    let mut db = [0.0f32; O];
    for n in 0..N {
        let x: [f32; I] = xs.item(n).try_into().unwrap();
        let dy: [f32; O] = dys.item(n).try_into().unwrap();
        let mut y = [f32::NAN; O];
        linear(&mut y, &x, &w, b.as_ref());
        let mut dx = [0.0f32; I];
        linear_backward(Some(&mut dx), &mut dw, bias.then_some(&mut db), &dy, &x, &w);
        y_all.extend_from_slice(&y);
        dx_all.extend_from_slice(&dx);
    }
    let mut worst = assert_record(&y_all, rec("y"), atol, rtol);
    worst = worst.max(assert_record(&dx_all, rec("dx"), atol, rtol));
    worst = worst.max(assert_record(f2(&dw), rec("dw"), atol, rtol));
    if bias {
        worst = worst.max(assert_record(&db, rec("db"), atol, rtol));
    } else {
        assert_eq!(db, [0.0; O], "{p}: db must stay untouched without bias");
    }
    worst
}

#[test]
fn linear_matches_pytorch() {
    let mut worst = check_linear::<3, 7, 5>("i7_o5");
    worst = worst.max(check_linear::<3, 16, 1>("i16_o1_nobias"));
    worst = worst.max(check_linear::<3, 84, 10>("i84_o10"));
    check_covered(ops(), "linear", &["i7_o5", "i16_o1_nobias", "i84_o10"]);
    println!("linear worst: {worst:?}");
}

// ---------------------------------------------------------------- activations

#[test]
fn activations_match_pytorch() {
    use lenet_core::activation::{
        Activation, relu, relu_backward, sigmoid, sigmoid_backward, softmax, tanh, tanh_backward,
    };
    type Fwd = fn(&mut [f32], &[f32]);
    type Bwd = fn(&mut [f32], &[f32], &[f32]);
    let g = ops();
    let (atol, rtol) = ACT_TOL;
    let mut worst = Worst::default();
    let fns: [(&str, Fwd, Bwd, Activation); 3] = [
        ("sigmoid", sigmoid, sigmoid_backward, Activation::Sigmoid),
        ("relu", relu, relu_backward, Activation::Relu),
        ("tanh", tanh, tanh_backward, Activation::Tanh),
    ];
    for (name, fwd, bwd, act) in fns {
        let rec = |s: &str| g.get(&format!("activation/{name}/{s}"));
        let x = &rec("x").data;
        let dy = &rec("dy").data;
        let mut y = vec![f32::NAN; x.len()];
        fwd(&mut y, x);
        worst = worst.max(assert_record(&y, rec("y"), atol, rtol));
        let mut dx = vec![0.0f32; x.len()];
        bwd(&mut dx, dy, &y);
        worst = worst.max(assert_record(&dx, rec("dx"), atol, rtol));
        // The enum dispatches to the same functions.
        let mut y2 = vec![f32::NAN; x.len()];
        act.forward(&mut y2, x);
        assert_eq!(y2, y, "Activation::{act:?}.forward differs from {name}");
        let mut dx2 = vec![0.0f32; x.len()];
        act.backward(&mut dx2, dy, &y);
        assert_eq!(
            dx2, dx,
            "Activation::{act:?}.backward differs from {name}_backward"
        );
    }
    let xs = g.get("activation/softmax/x");
    let want = g.get("activation/softmax/y");
    let mut y_all = Vec::new();
    for r in 0..xs.dims[0] {
        let mut y = vec![f32::NAN; xs.dims[1]];
        softmax(&mut y, xs.item(r));
        y_all.extend_from_slice(&y);
    }
    worst = worst.max(assert_record(&y_all, want, atol, rtol));
    check_covered(g, "activation", &["sigmoid", "relu", "tanh", "softmax"]);
    println!("activation worst: {worst:?}");
}

// ---------------------------------------------------------------- losses

#[test]
fn losses_match_pytorch() {
    use lenet_core::loss::{
        binary_cross_entropy, binary_cross_entropy_backward, cross_entropy, cross_entropy_backward,
        mse, mse_backward, sum_squares, sum_squares_backward,
    };
    let g = ops();
    let (atol, rtol) = LOSS_TOL;
    let rec = |s: &str| g.get(&format!("loss/{s}"));
    let mut worst = Worst::default();

    // Mean cross-entropy over a batch of 4: the mean of per-sample losses,
    // gradient scaled by 1/N.
    let logits = rec("cross_entropy/logits");
    let n = logits.dims[0];
    let targets = &rec("cross_entropy/target").data;
    let mut loss = 0.0f32;
    let mut dlogits = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        let z: [f32; 10] = logits.item(i).try_into().unwrap();
        loss += cross_entropy(&z, t as usize) / n as f32;
        let mut d = [0.0f32; 10];
        cross_entropy_backward(&mut d, &z, t as usize, 1.0 / n as f32);
        dlogits.extend_from_slice(&d);
    }
    worst = worst.max(assert_record(
        &[loss],
        rec("cross_entropy/loss"),
        atol,
        rtol,
    ));
    worst = worst.max(assert_record(
        &dlogits,
        rec("cross_entropy/dlogits"),
        atol,
        rtol,
    ));

    type LossFn = fn(&[f32], &[f32]) -> f32;
    type LossBwd = fn(&mut [f32], &[f32], &[f32], f32);
    let fns: [(&str, &str, &str, LossFn, LossBwd); 3] = [
        ("mse", "pred", "dpred", mse, mse_backward),
        (
            "sum_squares",
            "pred",
            "dpred",
            sum_squares,
            sum_squares_backward,
        ),
        (
            "bce",
            "p",
            "dp",
            binary_cross_entropy,
            binary_cross_entropy_backward,
        ),
    ];
    for (name, input, grad, f, b) in fns {
        let p = &rec(&format!("{name}/{input}")).data;
        let t = &rec(&format!("{name}/target")).data;
        let l = f(p, t);
        worst = worst.max(assert_record(
            &[l],
            rec(&format!("{name}/loss")),
            atol,
            rtol,
        ));
        let mut d = vec![0.0f32; p.len()];
        b(&mut d, p, t, 1.0);
        worst = worst.max(assert_record(
            &d,
            rec(&format!("{name}/{grad}")),
            atol,
            rtol,
        ));
    }
    // log(0) clamped at -100, as BCELoss does.
    let l = binary_cross_entropy(&rec("bce_edge/p").data, &rec("bce_edge/target").data);
    worst = worst.max(assert_record(&[l], rec("bce_edge/loss"), atol, rtol));
    check_covered(
        g,
        "loss",
        &["cross_entropy", "mse", "sum_squares", "bce", "bce_edge"],
    );
    println!("loss worst: {worst:?}");
}

// ---------------------------------------------------------------- optimizers

#[test]
fn optimizers_match_pytorch() {
    use lenet_core::optim::{Adam, AdamState, Sgd, SgdState};
    const N: usize = 20;
    enum Opt {
        Adam(Adam),
        Sgd(Sgd),
    }
    // The same hyperparameters as OPTIM_CONFIGS in gen_golden.py; each
    // record's source names the torch.optim constructor.
    let configs = [
        ("adam_default", Opt::Adam(Adam::new(1e-3))),
        (
            "adam_custom",
            Opt::Adam(
                Adam::new(1e-2)
                    .with_betas(0.8, 0.99)
                    .with_eps(1e-6)
                    .with_weight_decay(0.1),
            ),
        ),
        ("sgd_plain", Opt::Sgd(Sgd::new(0.1))),
        ("sgd_momentum", Opt::Sgd(Sgd::new(0.1).with_momentum(0.9))),
        (
            "sgd_momentum_wd",
            Opt::Sgd(Sgd::new(0.05).with_momentum(0.9).with_weight_decay(0.01)),
        ),
    ];
    let g = ops();
    let (atol, rtol) = OPTIM_TOL;
    let mut worst = Worst::default();
    for (name, opt) in &configs {
        let rec = |s: &str| g.get(&format!("optim/{name}/{s}"));
        let mut p: [f32; N] = rec("p0").shaped(&[N]).try_into().unwrap();
        let grads = rec("grads");
        let steps = grads.dims[0];
        rec("params").shaped(&[steps, N]);
        let mut adam = AdamState::new([0.0f32; N]);
        let mut sgd = SgdState::new([0.0f32; N]);
        for t in 0..steps {
            let gr: [f32; N] = grads.item(t).try_into().unwrap();
            match opt {
                Opt::Adam(o) => o.step(&mut p, &gr, &mut adam),
                Opt::Sgd(o) => o.step(&mut p, &gr, &mut sgd),
            }
            let want = rec("params");
            worst = worst.max(assert_close(
                &format!("optim/{name}/params step {} [{}]", t + 1, want.source),
                &p,
                want.item(t),
                atol,
                rtol,
            ));
        }
    }
    let names: Vec<&str> = configs.iter().map(|c| c.0).collect();
    check_covered(g, "optim", &names);
    println!("optim worst: {worst:?}");
}

// ---------------------------------------------------------------- LeNet-5

/// Loads the named tensors of a `state_dict` prefix into `params`, in
/// `PARAM_NAMES` (state_dict) order.
fn load_params<P: lenet_core::optim::Parameters>(params: &mut P, prefix: &str) {
    use lenet_core::model::PARAM_NAMES;
    let g = lenet();
    let mut n = 0;
    for (t, name) in params.tensors_mut().zip(PARAM_NAMES) {
        fill(t, &g.get(&format!("{prefix}/{name}")).data, name);
        n += 1;
    }
    assert_eq!(n, PARAM_NAMES.len(), "{prefix}: tensor count");
}

/// Compares every tensor of `params` with the `state_dict` under `prefix`.
fn compare_params<P: lenet_core::optim::Parameters>(
    params: &P,
    prefix: &str,
    atol: f32,
    rtol: f32,
) -> Worst {
    use lenet_core::model::PARAM_NAMES;
    let g = lenet();
    let mut worst = Worst::default();
    let mut failures = Vec::new();
    // Check every tensor before failing, so one run shows all mismatches.
    for (t, name) in params.tensors().zip(PARAM_NAMES) {
        let want = g.get(&format!("{prefix}/{name}"));
        match std::panic::catch_unwind(|| assert_record(t, want, atol, rtol)) {
            Ok(w) => worst = worst.max(w),
            Err(e) => failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{name}: mismatch")),
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} tensors out of tolerance:\n{}",
        failures.len(),
        PARAM_NAMES.len(),
        failures.join("\n")
    );
    worst
}

/// The fixed Fashion-MNIST batch and its labels.
fn lenet_batch() -> (Vec<lenet_core::model::Image>, Vec<u8>) {
    let g = lenet();
    let xs = g.get("lenet/x");
    let n = xs.dims[0];
    xs.shaped(&[n, 1, 28, 28]);
    let images = (0..n)
        .map(|i| {
            let mut img = [[[0.0f32; 28]; 28]; 1];
            fill(f3m(&mut img), xs.item(i), "image");
            img
        })
        .collect();
    let labels = g
        .get("lenet/labels")
        .data
        .iter()
        .map(|&l| l as u8)
        .collect();
    (images, labels)
}

/// Logits, mean loss, gradients, 10 Adam steps and 5 SGD-with-momentum
/// steps of one LeNet-5 variant against PyTorch.
fn check_model<M: lenet_core::model::Model>(
    model: &M,
    name: &str,
    zero: Box<M::Params>,
    mut acts: Box<M::Activations>,
    train_tol: (f32, f32),
) -> (Worst, Worst) {
    use lenet_core::loss::cross_entropy;
    use lenet_core::model::{accumulate_gradients, train_step_batch};
    use lenet_core::optim::{Adam, AdamState, Sgd, SgdState};
    let g = lenet();
    let p = format!("lenet/{name}");
    let (images, labels) = lenet_batch();
    let n = images.len();
    let scale = 1.0 / n as f32;

    let mut params = zero.clone();
    load_params(&mut *params, &format!("{p}/init"));

    // Forward: per-image logits and the batch-mean cross-entropy.
    let (atol, rtol) = MODEL_TOL;
    let mut logits_all = Vec::new();
    let mut loss = 0.0f32;
    for (x, &l) in images.iter().zip(&labels) {
        let logits = *model.forward(&mut acts, &params, x);
        loss += cross_entropy(&logits, usize::from(l)) * scale;
        logits_all.extend_from_slice(&logits);
    }
    let mut fwd = assert_record(&logits_all, g.get(&format!("{p}/logits")), atol, rtol);
    fwd = fwd.max(assert_record(
        &[loss],
        g.get(&format!("{p}/loss")),
        atol,
        rtol,
    ));

    // Backward: gradients of the mean loss.
    let mut grads = zero.clone();
    for (x, &l) in images.iter().zip(&labels) {
        accumulate_gradients(model, &mut grads, &mut acts, &params, x, l, scale);
    }
    fwd = fwd.max(compare_params(&*grads, &format!("{p}/grad"), atol, rtol));

    // Training: PyTorch records the loss *before* each step.
    let (atol, rtol) = train_tol;
    let mut train = Worst::default();
    for opt_name in ["adam", "sgd"] {
        let mut params = zero.clone();
        load_params(&mut *params, &format!("{p}/init"));
        let want = g.get(&format!("{p}/{opt_name}/losses"));
        let mut losses = Vec::new();
        if opt_name == "adam" {
            let opt = Adam::new(1e-3);
            let mut state = Box::new(AdamState::new((*zero).clone()));
            for _ in 0..want.data.len() {
                losses.push(train_step_batch(
                    model,
                    &mut params,
                    &mut grads,
                    &mut acts,
                    &opt,
                    &mut state,
                    &images,
                    &labels,
                ));
            }
        } else {
            let opt = Sgd::new(0.1).with_momentum(0.9);
            let mut state = Box::new(SgdState::new((*zero).clone()));
            for _ in 0..want.data.len() {
                losses.push(train_step_batch(
                    model,
                    &mut params,
                    &mut grads,
                    &mut acts,
                    &opt,
                    &mut state,
                    &images,
                    &labels,
                ));
            }
        }
        train = train.max(assert_record(&losses, want, atol, rtol));
        train = train.max(compare_params(
            &*params,
            &format!("{p}/{opt_name}/final"),
            atol,
            rtol,
        ));
    }
    (fwd, train)
}

/// [`check_model`] on a big stack for the variant `name`, its buffers from
/// the `zeroed` constructors `params` and `acts`; prints the worst errors.
fn lenet_matches_pytorch<M: lenet_core::model::Model + Send + 'static>(
    model: M,
    name: &'static str,
    params: fn() -> M::Params,
    acts: fn() -> M::Activations,
    train_tol: (f32, f32),
) {
    with_big_stack(move || {
        let (params, acts) = (Box::new(params()), Box::new(acts()));
        let (fwd, train) = check_model(&model, name, params, acts, train_tol);
        println!("lenet {name} worst: forward/gradients {fwd:?}, training {train:?}");
    });
}

#[test]
fn lenet5_classic_matches_pytorch() {
    use lenet_core::model::{LeNet5, LeNet5Activations, LeNet5Params};
    let model = LeNet5 {
        act: Activation::Sigmoid,
    };
    let (params, acts) = (LeNet5Params::zeroed, LeNet5Activations::zeroed);
    lenet_matches_pytorch(model, "classic", params, acts, TRAIN_TOL);
}

#[test]
fn lenet5_max_matches_pytorch() {
    use lenet_core::model::{LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams};
    let model = LeNet5Max {
        act: Activation::Sigmoid,
    };
    let (params, acts) = (LeNet5MaxParams::zeroed, LeNet5MaxActivations::zeroed);
    lenet_matches_pytorch(model, "max", params, acts, TRAIN_TOL);
}

#[test]
fn lenet5_wide_matches_pytorch() {
    use lenet_core::model::{LeNet5Wide, LeNet5WideActivations, LeNet5WideParams};
    let model = LeNet5Wide {
        act: Activation::Sigmoid,
    };
    let (params, acts) = (LeNet5WideParams::zeroed, LeNet5WideActivations::zeroed);
    lenet_matches_pytorch(model, "wide", params, acts, WIDE_TRAIN_TOL);
}

#[test]
fn golden_files_hold_only_tested_groups() {
    check_covered(
        ops(),
        "",
        &[
            "conv2d",
            "max_pool2d",
            "avg_pool2d",
            "linear",
            "activation",
            "loss",
            "optim",
            "course",
            "upsample",
            "dropout",
        ],
    );
    let l = lenet();
    check_covered(l, "lenet", &["x", "labels", "classic", "max", "wide"]);
    for v in ["classic", "max", "wide"] {
        check_covered(
            l,
            &format!("lenet/{v}"),
            &["init", "logits", "loss", "grad", "adam", "sgd"],
        );
    }
}

// ---------------------------------------------------------------- upsample

#[test]
fn upsample_matches_pytorch() {
    use lenet_core::resize::{backward, forward};
    let g = ops();
    let (atol, rtol) = UPSAMPLE_TOL;
    let names = g.children("upsample");
    assert!(names.len() >= 4, "upsample configs: {names:?}");
    let mut worst = Worst::default();
    for name in &names {
        let p = format!("upsample/{name}");
        let rec = |s: &str| g.get(&format!("{p}/{s}"));
        let cfg: Vec<usize> = rec("cfg").data.iter().map(|&v| v as usize).collect();
        let [n, c, h, w, oh, ow] = cfg[..] else {
            panic!("{p}/cfg: {cfg:?}")
        };
        // The N samples' C planes are N * C planes, one after the other.
        let planes = n * c;
        let x = rec("x").shaped(&[n, c, h, w]);
        let dy = rec("dy").shaped(&[n, c, oh, ow]);
        let mut y = vec![f32::NAN; planes * oh * ow];
        forward(x, planes, h, w, &mut y, oh, ow);
        worst = worst.max(assert_record(&y, rec("y"), atol, rtol));
        let mut dx = vec![f32::NAN; planes * h * w];
        backward(dy, planes, h, w, oh, ow, &mut dx);
        worst = worst.max(assert_record(&dx, rec("dx"), atol, rtol));
    }
    for want in ["28_224", "28_32", "nonsquare", "down"] {
        assert!(names.iter().any(|n| n == want), "no upsample/{want}");
    }
    println!("upsample worst: {worst:?}");
}

// ---------------------------------------------------------------- dropout

#[test]
fn dropout_mask_matches_the_python_mirror() {
    use lenet_core::dropout::{bits, mask};
    let g = ops();
    // Raw bits, bit for bit: (seed, step, layer, index, bits) rows, all
    // below 2^24 and so exact in f32.
    let table = g.get("dropout/bits");
    assert_eq!(table.dims[1], 5, "{}", table.name);
    for row in table.data.chunks_exact(5) {
        let [seed, step, layer, index, want] = [0, 1, 2, 3, 4].map(|i| row[i] as u64);
        let got = bits(seed, step, layer as u32, index);
        assert_eq!(
            u64::from(got),
            want,
            "bits({seed}, {step}, {layer}, {index}) [{}]",
            table.source
        );
    }
    let names = g.children("dropout");
    let mut tested = vec!["bits".to_owned()];
    for name in names.iter().filter(|n| *n != "bits") {
        let p = format!("dropout/{name}");
        let rec = |s: &str| g.get(&format!("{p}/{s}"));
        let cfg: Vec<u64> = rec("cfg").data.iter().map(|&v| v as u64).collect();
        let [seed, step, layer, n, features] = cfg[..] else {
            panic!("{p}/cfg: {cfg:?}")
        };
        let prob = rec("p").scalar();
        let (n, f) = (n as usize, features as usize);
        let noise: Vec<f32> = (0..n * f)
            .map(|i| mask(seed, step, layer as u32, i as u64, prob))
            .collect();
        // The mask is integer arithmetic and one f32 division: exact, and
        // so are the products with it.
        assert_record(&noise, rec("noise"), 0.0, 0.0);
        let x = rec("x").shaped(&[n, f]);
        let dy = rec("dy").shaped(&[n, f]);
        let y: Vec<f32> = x.iter().zip(&noise).map(|(x, m)| x * m).collect();
        let dx: Vec<f32> = dy.iter().zip(&noise).map(|(d, m)| d * m).collect();
        assert_record(&y, rec("y"), 0.0, 0.0);
        assert_record(&dx, rec("dx"), 0.0, 0.0);
        let kept = noise.iter().filter(|&&m| m != 0.0).count();
        println!("dropout/{name}: p {prob}, kept {kept} of {}", n * f);
        tested.push(name.clone());
    }
    assert!(tested.len() >= 3, "dropout configs: {names:?}");
}

// ---------------------------------------------------------------- the harness itself

/// A minimal valid file with one record, for the reader tests.
fn tiny_file(version: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"LNGOLDEN");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for s in ["a/b", "torch.ones(2)"] {
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    b.push(1);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&1.0f32.to_le_bytes());
    b.extend_from_slice(&(-2.5f32).to_le_bytes());
    b
}

#[test]
fn reader_parses_and_validates() {
    use lenet_host::golden::{GOLDEN_VERSION, GoldenError};
    let ok = Golden::parse("t", &tiny_file(GOLDEN_VERSION)).unwrap();
    assert_eq!(ok.records.len(), 1);
    assert_eq!(ok.get("a/b").dims, [2]);
    assert_eq!(ok.get("a/b").data, [1.0, -2.5]);
    assert_eq!(ok.get("a/b").source, "torch.ones(2)");

    let err = Golden::parse("t", &tiny_file(GOLDEN_VERSION + 1)).unwrap_err();
    assert_eq!(
        err,
        GoldenError::Version {
            found: GOLDEN_VERSION + 1,
            expected: GOLDEN_VERSION
        }
    );
    assert!(
        err.to_string()
            .contains("/usr/bin/python3 tests/golden/gen_golden.py"),
        "the version error must say how to regenerate: {err}"
    );
    let mut bad = tiny_file(GOLDEN_VERSION);
    bad[0] = b'X';
    assert_eq!(Golden::parse("t", &bad).unwrap_err(), GoldenError::BadMagic);
    let full = tiny_file(GOLDEN_VERSION);
    assert!(matches!(
        Golden::parse("t", &full[..full.len() - 1]).unwrap_err(),
        GoldenError::Truncated { .. }
    ));
    let mut long = full.clone();
    long.push(0);
    assert_eq!(
        Golden::parse("t", &long).unwrap_err(),
        GoldenError::TrailingBytes { count: 1 }
    );
}

#[test]
fn assert_close_accepts_within_tolerance() {
    let w = assert_close("t", &[1.0, 2.0 + 1e-6, -3.0], &[1.0, 2.0, -3.0], 0.0, 1e-6);
    assert!(w.abs > 0.0 && w.abs < 2e-6);
}

#[test]
#[should_panic(expected = "worst at index 2: got 3.1e0, want 3e0")]
fn assert_close_fails_and_names_the_worst_element() {
    assert_close("t", &[1.0, 2.05, 3.1], &[1.0, 2.0, 3.0], 1e-3, 1e-3);
}

#[test]
#[should_panic(expected = "out of tolerance")]
fn assert_close_rejects_nan() {
    assert_close("t", &[f32::NAN], &[1.0], 1.0, 1.0);
}
