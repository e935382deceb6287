//! The layer-by-layer path against the layer-list reference
//! ([`crate::reference_net`]) and, on the LeNets, against the fused LeNet
//! kernels.

use super::*;
use crate::backend;
use crate::backend::cpu::bench::random_data;
use crate::backend::cpu::tests::assert_close;
use crate::backend::cpu::{CpuOptions, CpuTrainer, fused_lenet};
use crate::backend::init_params;
use crate::backend::reference::new_reference;
use crate::backend::{OptimizerConfig, Trainer, TrainerConfig};
use lenet_core::model::{AlexNetConfig, ModelKind, VggConfig};

const ATOL: f64 = 1e-5;

/// The CPU trainer on its layer-by-layer path, whatever the network.
fn layered(cfg: &TrainerConfig, params: &[f32]) -> Result<CpuTrainer, TrainerError> {
    let opts = CpuOptions {
        fused: false,
        ..CpuOptions::default()
    };
    CpuTrainer::with_options(cfg, params, opts)
}
const RTOL: f64 = 1e-5;

fn sgd(lr: f32, momentum: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd {
        lr,
        momentum,
        weight_decay: 0.0,
    }
}

fn config(
    arch: Arch,
    act: Activation,
    optimizer: OptimizerConfig,
    threads: usize,
) -> TrainerConfig {
    TrainerConfig {
        arch,
        act,
        optimizer,
        threads,
        dropout_seed: 11,
    }
}

fn batch(n: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut x = vec![0.0; n * IMG];
    random_data(&mut x, seed);
    let labels = (0..n).map(|i| ((i * 7 + 3) % CLASSES) as u8).collect();
    (x, labels)
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Logits, loss and gradient (one SGD step at learning rate 1: `g = p0 - p1`).
fn logits_loss_grad(t: &mut dyn Trainer, x: &[f32], labels: &[u8]) -> (Vec<f32>, f32, Vec<f32>) {
    let mut logits = vec![0.0; labels.len() * CLASSES];
    t.forward(x, &mut logits).unwrap();
    let p0 = t.params().unwrap();
    let loss = t.train_batch(x, labels).unwrap();
    let p1 = t.params().unwrap();
    let g = p0.iter().zip(&p1).map(|(a, b)| a - b).collect();
    (logits, loss, g)
}

const VGG_28: VggConfig = VggConfig {
    blocks: 3,
    width_div: 16,
    size: 28,
    hidden: 64,
};
const VGG_32: VggConfig = VggConfig {
    blocks: 2,
    width_div: 16,
    size: 32,
    hidden: 32,
};
/// The smallest side AlexNet's layers fit: 65 -> 15 -> 7 -> 7 -> 3 -> 1.
const ALEX_65: AlexNetConfig = AlexNetConfig {
    width_div: 16,
    size: 65,
    hidden: 64,
};

#[test]
fn generic_trainer_matches_the_reference_on_small_nets() {
    let cases = [
        (Arch::Cnn, Activation::Relu, 5),
        (Arch::Vgg(VGG_28), Activation::Relu, 6),
        (Arch::Vgg(VGG_28), Activation::Tanh, 6),
        (Arch::Vgg(VGG_32), Activation::Sigmoid, 7),
        (Arch::AlexNet(ALEX_65), Activation::Relu, 6),
    ];
    for (arch, act, n) in cases {
        let what = format!("{arch} {act:?}");
        let (x, labels) = batch(n, 5);
        let cfg = config(arch, act, sgd(1.0, 0.0), 2);
        let mut fast = backend::cpu_trainer(&cfg, 3).unwrap();
        let mut slow = new_reference(&cfg, 3).unwrap();
        let (lf, loss_f, gf) = logits_loss_grad(fast.as_mut(), &x, &labels);
        let (lr, loss_r, gr) = logits_loss_grad(slow.as_mut(), &x, &labels);
        assert_close(&format!("{what} logits"), &lf, &wide(&lr), ATOL, RTOL);
        assert_close(
            &format!("{what} loss"),
            &[loss_f],
            &[f64::from(loss_r)],
            ATOL,
            RTOL,
        );
        assert_close(&format!("{what} gradient"), &gf, &wide(&gr), ATOL, RTOL);
        assert!(gf.iter().any(|&g| g != 0.0), "{what}: zero gradient");
    }
}

#[test]
fn adam_and_momentum_steps_with_dropout_match_the_reference() {
    // The VGG head has two dropout layers.
    for opt in [OptimizerConfig::adam(1e-3), sgd(0.05, 0.9)] {
        let cfg = config(Arch::Vgg(VGG_32), Activation::Relu, opt, 2);
        let init = init_params(cfg.arch, 4);
        let mut fast = layered(&cfg, &init).unwrap();
        let mut slow = crate::backend::reference::NetReference::new(&cfg, &init).unwrap();
        for step in 0..3 {
            let (x, labels) = batch(9, 20 + step);
            let a = fast.train_batch(&x, &labels).unwrap();
            let b = slow.train_batch(&x, &labels).unwrap();
            assert_close(
                &format!("{opt:?} loss {step}"),
                &[a],
                &[f64::from(b)],
                ATOL,
                RTOL,
            );
        }
        let what = format!("{opt:?} after 3 steps");
        let (pf, pr) = (fast.params().unwrap(), slow.params().unwrap());
        assert_close(&format!("{what}: params"), &pf, &wide(&pr), ATOL, RTOL);
        let (sf, sr) = (
            fast.optimizer_state().unwrap(),
            slow.optimizer_state().unwrap(),
        );
        assert_eq!(sf.step, 3);
        assert_eq!(sf.step, sr.step);
        assert_close(&format!("{what}: m"), &sf.m, &wide(&sr.m), ATOL, RTOL);
        assert_close(&format!("{what}: v"), &sf.v, &wide(&sr.v), ATOL, RTOL);
        // Dropout is the identity in inference: both agree there too.
        let (x, _) = batch(4, 99);
        let (mut a, mut b) = (vec![0.0; 40], vec![0.0; 40]);
        fast.forward(&x, &mut a).unwrap();
        slow.forward(&x, &mut b).unwrap();
        assert_close(&format!("{what}: logits"), &a, &wide(&b), ATOL, RTOL);
    }
}

#[test]
fn thread_counts_agree_and_repeat_bit_for_bit() {
    let arch = Arch::Vgg(VGG_28);
    let run = |threads: usize| {
        let cfg = config(arch, Activation::Relu, OptimizerConfig::adam(1e-3), threads);
        let mut t = layered(&cfg, &init_params(arch, 8)).unwrap();
        let mut losses = Vec::new();
        for step in 0..2 {
            let (x, labels) = batch(13, 40 + step);
            losses.push(t.train_batch(&x, &labels).unwrap());
        }
        let (x, _) = batch(70, 1);
        let mut logits = vec![0.0; 700];
        t.forward(&x, &mut logits).unwrap();
        (losses, t.params().unwrap(), logits)
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(two, run(2), "two threads, run to run");
    assert_eq!(one, run(1), "one thread, run to run");
    assert!(
        one.0.iter().all(|l| l.is_finite() && *l > 0.0),
        "{:?}",
        one.0
    );
    assert_close("losses", &two.0, &wide(&one.0), ATOL, RTOL);
    assert_close("params", &two.1, &wide(&one.1), ATOL, RTOL);
    assert_close("logits", &two.2, &wide(&one.2), ATOL, RTOL);
}

#[test]
fn lenets_layer_by_layer_match_the_fused_lenet_kernels() {
    for kind in ModelKind::ALL {
        assert_eq!(fused_lenet(kind.into()), Some(kind));
        for act in Activation::ALL {
            let what = format!("{kind} {act:?}");
            let cfg = config(kind.into(), act, sgd(1.0, 0.0), 2);
            let init = init_params(cfg.arch, 6);
            let (x, labels) = batch(21, 9);
            let mut fast = layered(&cfg, &init).unwrap();
            let mut known = CpuTrainer::new(&cfg, &init).unwrap();
            assert_eq!(
                (fast.path_name(), known.path_name()),
                ("layer by layer", "fused LeNet")
            );
            let (lf, loss_f, gf) = logits_loss_grad(&mut fast, &x, &labels);
            let (lk, loss_k, gk) = logits_loss_grad(&mut known, &x, &labels);
            assert_close(&format!("{what} logits"), &lf, &wide(&lk), ATOL, RTOL);
            assert_close(
                &format!("{what} loss"),
                &[loss_f],
                &[f64::from(loss_k)],
                ATOL,
                RTOL,
            );
            assert_close(&format!("{what} gradient"), &gf, &wide(&gk), ATOL, RTOL);
        }
    }
}

#[test]
fn wrong_sizes_are_errors_not_panics() {
    let cfg = config(Arch::Cnn, Activation::Relu, OptimizerConfig::adam(1e-3), 1);
    let short = vec![0.0; Arch::Cnn.num_params() - 1];
    assert!(matches!(layered(&cfg, &short), Err(TrainerError::State(_))));
    assert!(crate::backend::reference::NetReference::new(&cfg, &short).is_err());
    assert!(backend::inference_trainer(Arch::Cnn, Activation::Relu, &short, 1).is_err());
    let bad = config(
        Arch::Vgg(VggConfig {
            blocks: 5,
            ..VGG_28
        }),
        Activation::Relu,
        OptimizerConfig::adam(1e-3),
        1,
    );
    assert!(backend::cpu_trainer(&bad, 0).is_err());
    assert!(backend::reference_trainer(&bad, 0).is_err());

    let mut t = layered(&cfg, &init_params(Arch::Cnn, 1)).unwrap();
    let (x, labels) = batch(3, 1);
    assert!(t.train_batch(&x[1..], &labels).is_err());
    assert!(t.train_batch(&x, &[1, 2, 10]).is_err());
    assert!(t.forward(&x, &mut [0.0; 29]).is_err());
    assert!(t.forward(&x, &mut [0.0; 20]).is_err());
    let state = t.optimizer_state().unwrap();
    assert!(t.load(&short, &state).is_err());
    // Nothing above changed the trainer.
    assert_eq!(t.params().unwrap(), init_params(Arch::Cnn, 1));
    assert_eq!(t.optimizer_state().unwrap().step, 0);
}
