//! The batched trainer against a plain-loop reference written here in
//! `f64` (one image at a time, PyTorch formulas), and against itself for
//! determinism. Tolerances: `|a - b| <= atol + rtol * |b|`.

use super::bench::{random_data, random_params};
use super::lenet::Layout;
use super::*;
use crate::backend::OptimizerConfig;
use lenet_core::activation::Activation;

/// Reference forward and backward of one image; returns logits and the
/// loss, and adds the gradient of the loss to `g` (both `f64`).
fn reference_image(
    kind: ModelKind,
    act: Activation,
    p: &[f32],
    img: &[f32],
    label: usize,
    g: &mut [f64],
) -> ([f64; 10], f64) {
    let max = kind.is_max_pool();
    let (pad, c1, p1, c2) = if max { (0, 24, 12, 8) } else { (2, 28, 14, 10) };
    let (n1, n2) = kind.channels();
    let lay = Layout::of(kind);
    let w = |i: usize| f64::from(p[i]);
    let f = |x: f64| match act {
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
    };
    let df = |y: f64| match act {
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Relu => f64::from(u8::from(y > 0.0)),
        Activation::Tanh => 1.0 - y * y,
    };
    let xin = |y: isize, x: isize| -> f64 {
        if (0..28).contains(&y) && (0..28).contains(&x) {
            f64::from(img[y as usize * 28 + x as usize])
        } else {
            0.0
        }
    };
    // conv1 + act: a1 (n1, c1, c1)
    let mut a1 = vec![0.0; n1 * c1 * c1];
    for co in 0..n1 {
        for oy in 0..c1 {
            for ox in 0..c1 {
                let mut s = w(lay.c1b + co);
                for u in 0..5 {
                    for v in 0..5 {
                        let (iy, ix) = ((oy + u) as isize - pad, (ox + v) as isize - pad);
                        s += w(lay.c1w + co * 25 + u * 5 + v) * xin(iy, ix);
                    }
                }
                a1[(co * c1 + oy) * c1 + ox] = f(s);
            }
        }
    }
    // pool: returns pooled and, for max, the argmax flat index
    let pool = |a: &[f64], c: usize, h: usize| -> (Vec<f64>, Vec<usize>) {
        let o = h / 2;
        let mut y = vec![0.0; c * o * o];
        let mut arg = vec![0; c * o * o];
        for ch in 0..c {
            for py in 0..o {
                for px in 0..o {
                    let idx = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(dy, dx)| (ch * h + 2 * py + dy) * h + 2 * px + dx);
                    let out = (ch * o + py) * o + px;
                    if max {
                        let mut best = idx[0];
                        for &i in &idx[1..] {
                            if a[i] > a[best] {
                                best = i;
                            }
                        }
                        y[out] = a[best];
                        arg[out] = best;
                    } else {
                        y[out] = idx.iter().map(|&i| a[i]).sum::<f64>() / 4.0;
                    }
                }
            }
        }
        (y, arg)
    };
    let (pp1, arg1) = pool(&a1, n1, c1);
    let mut a2 = vec![0.0; n2 * c2 * c2];
    for co in 0..n2 {
        for oy in 0..c2 {
            for ox in 0..c2 {
                let mut s = w(lay.c2b + co);
                for ci in 0..n1 {
                    for u in 0..5 {
                        for v in 0..5 {
                            s += w(lay.c2w + (co * n1 + ci) * 25 + u * 5 + v)
                                * pp1[(ci * p1 + oy + u) * p1 + ox + v];
                        }
                    }
                }
                a2[(co * c2 + oy) * c2 + ox] = f(s);
            }
        }
    }
    let (pp2, arg2) = pool(&a2, n2, c2);
    let dense = |x: &[f64], wo: usize, bo: usize, o: usize, act_on: bool| -> Vec<f64> {
        (0..o)
            .map(|j| {
                let s = w(bo + j)
                    + x.iter()
                        .enumerate()
                        .map(|(i, xi)| w(wo + j * x.len() + i) * xi)
                        .sum::<f64>();
                if act_on { f(s) } else { s }
            })
            .collect()
    };
    let h1 = dense(&pp2, lay.f1w, lay.f1b, 120, true);
    let h2 = dense(&h1, lay.f2w, lay.f2b, 84, true);
    let z = dense(&h2, lay.f3w, lay.f3b, 10, false);
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
    let loss = s.ln() + m - z[label];
    // Backward. dz = softmax - onehot.
    let dz: Vec<f64> = (0..10)
        .map(|k| (z[k] - m).exp() / s - f64::from(u8::from(k == label)))
        .collect();
    // dense backward: dW += dy x^T, db += dy, dx = W^T dy
    let mut dense_bwd = |dy: &[f64], x: &[f64], wo: usize, bo: usize| -> Vec<f64> {
        let mut dx = vec![0.0; x.len()];
        for (j, d) in dy.iter().enumerate() {
            g[bo + j] += d;
            for (i, xi) in x.iter().enumerate() {
                g[wo + j * x.len() + i] += d * xi;
                dx[i] += w(wo + j * x.len() + i) * d;
            }
        }
        dx
    };
    let dh2 = dense_bwd(&dz, &h2, lay.f3w, lay.f3b);
    let dz2: Vec<f64> = dh2.iter().zip(&h2).map(|(d, y)| d * df(*y)).collect();
    let dh1 = dense_bwd(&dz2, &h1, lay.f2w, lay.f2b);
    let dz1: Vec<f64> = dh1.iter().zip(&h1).map(|(d, y)| d * df(*y)).collect();
    let dp2 = dense_bwd(&dz1, &pp2, lay.f1w, lay.f1b);
    let unpool = |dp: &[f64], arg: &[usize], a: &[f64], c: usize, h: usize| -> Vec<f64> {
        let o = h / 2;
        let mut da = vec![0.0; c * h * h];
        for ch in 0..c {
            for py in 0..o {
                for px in 0..o {
                    let out = (ch * o + py) * o + px;
                    if max {
                        da[arg[out]] += dp[out];
                    } else {
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            da[(ch * h + 2 * py + dy) * h + 2 * px + dx] += dp[out] / 4.0;
                        }
                    }
                }
            }
        }
        da.iter().zip(a).map(|(d, y)| d * df(*y)).collect()
    };
    let dzc2 = unpool(&dp2, &arg2, &a2, n2, c2);
    let mut dp1 = vec![0.0; n1 * p1 * p1];
    for co in 0..n2 {
        for oy in 0..c2 {
            for ox in 0..c2 {
                let d = dzc2[(co * c2 + oy) * c2 + ox];
                g[lay.c2b + co] += d;
                for ci in 0..n1 {
                    for u in 0..5 {
                        for v in 0..5 {
                            let wi = lay.c2w + (co * n1 + ci) * 25 + u * 5 + v;
                            let xi = (ci * p1 + oy + u) * p1 + ox + v;
                            g[wi] += d * pp1[xi];
                            dp1[xi] += w(wi) * d;
                        }
                    }
                }
            }
        }
    }
    let dzc1 = unpool(&dp1, &arg1, &a1, n1, c1);
    for co in 0..n1 {
        for oy in 0..c1 {
            for ox in 0..c1 {
                let d = dzc1[(co * c1 + oy) * c1 + ox];
                g[lay.c1b + co] += d;
                for u in 0..5 {
                    for v in 0..5 {
                        let (iy, ix) = ((oy + u) as isize - pad, (ox + v) as isize - pad);
                        g[lay.c1w + co * 25 + u * 5 + v] += d * xin(iy, ix);
                    }
                }
            }
        }
    }
    (z.try_into().expect("10 logits"), loss)
}

/// Reference logits `(n, 10)`, mean loss and mean gradient of a batch.
fn reference_batch(
    kind: ModelKind,
    act: Activation,
    p: &[f32],
    x: &[f32],
    labels: &[u8],
) -> (Vec<f64>, f64, Vec<f64>) {
    let n = labels.len();
    let mut g = vec![0.0; p.len()];
    let mut logits = Vec::with_capacity(n * 10);
    let mut loss = 0.0;
    for (img, &t) in x.chunks_exact(784).zip(labels) {
        let (z, l) = reference_image(kind, act, p, img, t.into(), &mut g);
        logits.extend(z);
        loss += l;
    }
    for v in &mut g {
        *v /= n as f64;
    }
    (logits, loss / n as f64, g)
}

/// Checks `|a - b| <= atol + rtol * |b|` element-wise, naming the worst.
#[track_caller]
pub(crate) fn assert_close(what: &str, a: &[f32], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let excess = (f64::from(x) - y).abs() - (atol + rtol * y.abs());
        let nan = x.is_nan() || y.is_nan();
        if excess > worst.0 || nan {
            worst = (excess.max(f64::MAX * f64::from(u8::from(nan))), i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i}: {} vs reference {} (atol {atol}, rtol {rtol})",
        a[i],
        b[i]
    );
}

fn config(kind: ModelKind, act: Activation, threads: usize) -> TrainerConfig {
    TrainerConfig {
        arch: kind.into(),
        dropout_seed: 0,
        act,
        optimizer: OptimizerConfig::Adam {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        },
        threads,
    }
}

fn batch(n: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut x = vec![0.0; n * 784];
    random_data(&mut x, seed);
    for v in &mut x {
        *v *= 2.0;
    }
    let labels = (0..n).map(|i| ((i as u64 * 7 + seed) % 10) as u8).collect();
    (x, labels)
}

fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    match Isa::detect() {
        Isa::Avx512 => v.extend([Isa::Avx2, Isa::Avx512]),
        Isa::Avx2 => v.push(Isa::Avx2),
        Isa::Generic => {}
    }
    v
}

/// Logits, loss and every gradient of the batched path against the
/// reference, for every model, all activations and instruction sets, a
/// batch that is not a multiple of any block and both thread counts.
#[test]
fn matches_reference_forward_and_gradients() {
    let n = 37;
    for kind in ModelKind::ALL {
        let params = random_params(kind, 3);
        let (x, labels) = batch(n, 5);
        for act in Activation::ALL {
            let (rl, rloss, rg) = reference_batch(kind, act, &params, &x, &labels);
            for isa in isas() {
                for threads in [1, 2] {
                    let what = format!("{kind:?} {act:?} {isa:?} threads={threads}");
                    let mut t =
                        CpuTrainer::with_isa(&config(kind, act, threads), &params, isa).unwrap();
                    let mut logits = vec![0.0; n * 10];
                    t.forward(&x, &mut logits).unwrap();
                    assert_close(&format!("{what} logits"), &logits, &rl, 1e-5, 1e-4);
                    let mut g = vec![0.0; params.len()];
                    let loss = t.loss_and_grad(&x, &labels, &mut g).unwrap();
                    assert_close(&format!("{what} loss"), &[loss], &[rloss], 1e-6, 1e-5);
                    let scale = rg.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert_close(&format!("{what} grad"), &g, &rg, 1e-6 * scale, 1e-4);
                }
            }
        }
    }
}

/// One Adam step (with weight decay) against the reference gradient fed
/// through PyTorch's update formula in `f64`.
#[test]
fn adam_step_matches_reference() {
    let kind = ModelKind::LeNet5;
    let act = Activation::Sigmoid;
    let params = random_params(kind, 11);
    let (x, labels) = batch(20, 2);
    let cfg = config(kind, act, 2);
    let mut t = CpuTrainer::new(&cfg, &params).unwrap();
    let (lr, b1, b2, eps, wd) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 1e-4f64);
    let mut p: Vec<f64> = params.iter().map(|&v| f64::from(v)).collect();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for step in 1..=3 {
        let pf: Vec<f32> = p.iter().map(|&v| v as f32).collect();
        let (_, rloss, rg) = reference_batch(kind, act, &pf, &x, &labels);
        let loss = t.train_batch(&x, &labels).unwrap();
        assert_close("loss", &[loss], &[rloss], 1e-5, 1e-4);
        for i in 0..p.len() {
            let g = rg[i] + wd * p[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let denom = v[i].sqrt() / (1.0 - b2.powi(step)).sqrt() + eps;
            p[i] -= lr / (1.0 - b1.powi(step)) * m[i] / denom;
        }
        // Adam normalises the step, so a tiny gradient difference can move
        // a parameter by up to ~lr: compare at a fraction of lr.
        assert_close(
            &format!("params after step {step}"),
            &t.params().unwrap(),
            &p,
            2e-4,
            1e-4,
        );
    }
    assert_eq!(t.optimizer_state().unwrap().step, 3);
}

/// SGD with momentum: the first step uses the gradient as the buffer.
#[test]
fn sgd_momentum_first_step_is_plain_sgd() {
    let kind = ModelKind::LeNet5Max;
    let act = Activation::Relu;
    let params = random_params(kind, 4);
    let (x, labels) = batch(9, 1);
    let mut cfg = config(kind, act, 1);
    cfg.optimizer = OptimizerConfig::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut t = CpuTrainer::new(&cfg, &params).unwrap();
    let (_, _, rg) = reference_batch(kind, act, &params, &x, &labels);
    t.train_batch(&x, &labels).unwrap();
    let want: Vec<f64> = params
        .iter()
        .zip(&rg)
        .map(|(&p, g)| f64::from(p) - 0.1 * g)
        .collect();
    assert_close("params", &t.params().unwrap(), &want, 1e-6, 1e-4);
    let state = t.optimizer_state().unwrap();
    assert_close("momentum buffer", &state.m, &rg, 1e-6, 1e-3);
}

/// Same seed, batch and thread count: bit-identical weights.
#[test]
fn training_is_deterministic() {
    let kind = ModelKind::LeNet5;
    let params = random_params(kind, 8);
    let (x, labels) = batch(100, 9);
    let run = || {
        let mut t = CpuTrainer::new(&config(kind, Activation::Sigmoid, 2), &params).unwrap();
        for _ in 0..3 {
            t.train_batch(&x, &labels).unwrap();
        }
        t.params().unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_ne!(a, params);
}

/// Training lowers the loss on a fixed batch.
#[test]
fn training_reduces_loss() {
    let kind = ModelKind::LeNet5;
    let params = random_params(kind, 1);
    let (x, labels) = batch(64, 3);
    let mut cfg = config(kind, Activation::Relu, 2);
    cfg.optimizer = OptimizerConfig::adam(3e-3);
    let mut t = CpuTrainer::new(&cfg, &params).unwrap();
    let first = t.train_batch(&x, &labels).unwrap();
    let mut last = first;
    for _ in 0..40 {
        last = t.train_batch(&x, &labels).unwrap();
    }
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

/// Checkpoint round trip: loading params and state resumes exactly.
#[test]
fn load_resumes_exactly() {
    let kind = ModelKind::LeNet5Max;
    let params = random_params(kind, 2);
    let (x, labels) = batch(40, 4);
    let cfg = config(kind, Activation::Tanh, 2);
    let mut a = CpuTrainer::new(&cfg, &params).unwrap();
    a.train_batch(&x, &labels).unwrap();
    let mut b = CpuTrainer::new(&cfg, &random_params(kind, 99)).unwrap();
    b.load(&a.params().unwrap(), &a.optimizer_state().unwrap())
        .unwrap();
    a.train_batch(&x, &labels).unwrap();
    b.train_batch(&x, &labels).unwrap();
    assert_eq!(a.params().unwrap(), b.params().unwrap());
}

#[test]
fn rejects_wrong_param_count() {
    let err =
        CpuTrainer::new(&config(ModelKind::LeNet5, Activation::Relu, 1), &[0.0; 10]).unwrap_err();
    assert!(
        matches!(err, TrainerError::State(ref m) if m == "expected 61706 parameters, got 10"),
        "{err}"
    );
    assert_eq!(Arch::LeNet(ModelKind::LeNet5Max).num_params(), 44_426);
    assert_eq!(Arch::LeNet(ModelKind::LeNet5Wide).num_params(), 85_822);
    for kind in ModelKind::ALL {
        assert_eq!(Layout::of(kind).total, kind.num_params());
    }
}

fn core_flat<P: lenet_core::optim::Parameters>(p: &P) -> Vec<f32> {
    p.tensors().flat_map(|t| t.iter().copied()).collect()
}

fn core_load<P: lenet_core::optim::Parameters>(p: &mut P, flat: &[f32]) {
    let mut o = 0;
    for t in p.tensors_mut() {
        t.copy_from_slice(&flat[o..o + t.len()]);
        o += t.len();
    }
    assert_eq!(o, flat.len());
}

/// Logits, gradient and one Adam step of the batched path against the
/// `lenet-core` reference model (`Model::forward/backward`,
/// `train_step_batch` with `optim::Adam`).
fn check_against_core<M: lenet_core::model::Model>(
    model: M,
    kind: ModelKind,
    act: Activation,
    mut p: Box<M::Params>,
    mut g: Box<M::Params>,
    mut acts: Box<M::Activations>,
) {
    use lenet_core::model::{Image, accumulate_gradients, train_step_batch};
    use lenet_core::optim::{Adam, AdamState};
    let params = random_params(kind, 21);
    core_load(&mut *p, &params);
    let n = 24;
    let (x, labels) = batch(n, 6);
    let images: Vec<Image> = x
        .chunks_exact(784)
        .map(|c| {
            core::array::from_fn(|_| {
                core::array::from_fn(|y| c[y * 28..y * 28 + 28].try_into().unwrap())
            })
        })
        .collect();
    let what = format!("{kind:?} {act:?} vs lenet-core");
    let mut ref_logits = Vec::new();
    for img in &images {
        ref_logits.extend(
            model
                .forward(&mut acts, &p, img)
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    let cfg = TrainerConfig {
        arch: kind.into(),
        dropout_seed: 0,
        act,
        optimizer: OptimizerConfig::adam(1e-3),
        threads: 2,
    };
    let mut t = CpuTrainer::new(&cfg, &params).unwrap();
    let mut logits = vec![0.0; n * 10];
    t.forward(&x, &mut logits).unwrap();
    assert_close(&format!("{what} logits"), &logits, &ref_logits, 1e-5, 1e-4);
    let mut ref_loss = 0.0;
    for (img, &l) in images.iter().zip(&labels) {
        ref_loss += accumulate_gradients(&model, &mut g, &mut acts, &p, img, l, 1.0 / n as f32);
    }
    let ref_g: Vec<f64> = core_flat(&*g).into_iter().map(f64::from).collect();
    let mut grad = vec![0.0; params.len()];
    let loss = t.loss_and_grad(&x, &labels, &mut grad).unwrap();
    assert_close(
        &format!("{what} loss"),
        &[loss],
        &[f64::from(ref_loss) / n as f64],
        1e-5,
        1e-4,
    );
    let scale = ref_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(&format!("{what} grad"), &grad, &ref_g, 1e-5 * scale, 1e-3);
    let mut zero = (*g).clone();
    lenet_core::optim::Parameters::fill(&mut zero, 0.0);
    let mut state = Box::new(AdamState::new(zero));
    train_step_batch(
        &model,
        &mut p,
        &mut g,
        &mut acts,
        &Adam::new(1e-3),
        &mut state,
        &images,
        &labels,
    );
    t.train_batch(&x, &labels).unwrap();
    let ref_p: Vec<f64> = core_flat(&*p).into_iter().map(f64::from).collect();
    // Adam's first step is lr * g / (|g| + eps): where the gradient is
    // vanishingly small (a unit saturated to exactly 1.0 in one path and
    // to 1 - 2^-24 in the other) its direction is noise, and only the
    // bound |step| <= lr holds for both.
    let ours = t.params().unwrap();
    let (mut strict_a, mut strict_b) = (Vec::new(), Vec::new());
    for i in 0..ours.len() {
        if ref_g[i].abs() >= 1e-4 * scale {
            strict_a.push(ours[i]);
            strict_b.push(ref_p[i]);
        } else {
            let d = (f64::from(ours[i]) - ref_p[i]).abs();
            assert!(
                d <= 2e-3 + 1e-6,
                "{what}: param {i}: {} vs {}",
                ours[i],
                ref_p[i]
            );
        }
    }
    assert!(
        strict_a.len() > ours.len() / 2,
        "{what}: too few significant gradients"
    );
    assert_close(
        &format!("{what} params after Adam"),
        &strict_a,
        &strict_b,
        2e-5,
        1e-4,
    );
}

#[test]
fn matches_lenet_core_model() {
    // lenet-core's structs are built by value (`Clone`, `AdamState::new`
    // take and return whole parameter sets, 343 KB each for the wide
    // LeNet): the test thread's default 2 MiB stack is too small for how
    // some builds inline them, so the check runs on a thread of its own.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(matches_lenet_core_model_on_a_large_stack)
        .unwrap()
        .join()
        .unwrap();
}

fn matches_lenet_core_model_on_a_large_stack() {
    use lenet_core::model::{
        LeNet5, LeNet5Activations, LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams, LeNet5Params,
        LeNet5Wide, LeNet5WideActivations, LeNet5WideParams,
    };
    for act in Activation::ALL {
        check_against_core(
            LeNet5 { act },
            ModelKind::LeNet5,
            act,
            Box::new(LeNet5Params::zeroed()),
            Box::new(LeNet5Params::zeroed()),
            Box::new(LeNet5Activations::zeroed()),
        );
        check_against_core(
            LeNet5Max { act },
            ModelKind::LeNet5Max,
            act,
            Box::new(LeNet5MaxParams::zeroed()),
            Box::new(LeNet5MaxParams::zeroed()),
            Box::new(LeNet5MaxActivations::zeroed()),
        );
        check_against_core(
            LeNet5Wide { act },
            ModelKind::LeNet5Wide,
            act,
            Box::new(LeNet5WideParams::zeroed()),
            Box::new(LeNet5WideParams::zeroed()),
            Box::new(LeNet5WideActivations::zeroed()),
        );
    }
}

/// The single-image path (used for inference batches of 1 to 3) agrees
/// with the block path and the reference.
#[test]
fn single_image_path_matches_blocks() {
    for kind in ModelKind::ALL {
        let params = random_params(kind, 13);
        let (x, labels) = batch(3, 8);
        for act in Activation::ALL {
            let (rl, _, _) = reference_batch(kind, act, &params, &x, &labels);
            let mut t = CpuTrainer::new(&config(kind, act, 2), &params).unwrap();
            let mut one = vec![0.0; 30];
            t.forward(&x, &mut one).unwrap();
            t.force_blocks = true;
            let mut blocks = vec![0.0; 30];
            t.forward(&x, &mut blocks).unwrap();
            let what = format!("{kind:?} {act:?}");
            assert_close(&format!("{what} single"), &one, &rl, 1e-5, 1e-4);
            assert_close(&format!("{what} blocks"), &blocks, &rl, 1e-5, 1e-4);
        }
    }
}
