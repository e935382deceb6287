//! The host's fast CPU trainer against PyTorch on the LeNet-5 golden batch
//! (`tests/golden/lenet.bin`, written by `tests/golden/gen_golden.py`):
//! logits, gradients (one SGD step with lr 1 recovers them exactly:
//! `g = p0 - p1`), 10 Adam steps and 5 SGD-with-momentum steps.
//!
//! Driven through the `Trainer` trait only, so the test holds whatever
//! kernels the back end uses to the same numbers as lenet-core: the CPU
//! trainer, and with the `cuda-emu` feature the CUDA trainer's kernels on
//! the emulated device.

mod common;

use common::{Golden, Worst, assert_close, assert_record};
use lenet_core::activation::Activation;
use lenet_core::model::{ModelKind, PARAM_NAMES};
use lenet_host::backend::{Device, make_trainer};
use lenet_host::trainer::{OptimizerConfig, OptimizerState, Trainer, TrainerConfig};

/// Logits, loss and gradients (worst seen: 2.4e-7 absolute).
const FORWARD_TOL: (f32, f32) = (1e-6, 1e-5);
/// Losses and weights after 10 Adam / 5 SGD steps. Adam divides by
/// `sqrt(v)`, so a gradient that is rounding noise still moves its weight
/// by about `lr`: worst seen 3.3e-6 absolute, on LeNet-5 classic.
const TRAIN_TOL: (f32, f32) = (1e-5, 1e-5);

fn state_dict(g: &Golden, prefix: &str) -> Vec<f32> {
    PARAM_NAMES
        .iter()
        .flat_map(|n| g.get(&format!("{prefix}/{n}")).data.iter().copied())
        .collect()
}

fn trainer(
    device: Device,
    kind: ModelKind,
    optimizer: OptimizerConfig,
    init: &[f32],
) -> Box<dyn Trainer> {
    let cfg = TrainerConfig {
        arch: kind.into(),
        dropout_seed: 0,
        act: Activation::Sigmoid,
        optimizer,
        threads: 1,
    };
    let (mut t, _) = make_trainer(device, &cfg, 0).expect("trainer");
    t.load(init, &OptimizerState::default()).unwrap();
    t
}

const fn adam(lr: f32) -> OptimizerConfig {
    OptimizerConfig::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

const fn sgd(lr: f32, momentum: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd {
        lr,
        momentum,
        weight_decay: 0.0,
    }
}

fn check(device: Device, kind: ModelKind, name: &str) -> (Worst, Worst) {
    let g = Golden::load("lenet.bin");
    let x = &g.get("lenet/x").data;
    let labels: Vec<u8> = g
        .get("lenet/labels")
        .data
        .iter()
        .map(|&l| l as u8)
        .collect();
    let n = labels.len();
    let p = format!("lenet/{name}");
    let init = state_dict(&g, &format!("{p}/init"));

    let (atol, rtol) = FORWARD_TOL;
    let mut t = trainer(device, kind, sgd(1.0, 0.0), &init);
    let mut logits = vec![f32::NAN; n * 10];
    t.forward(x, &mut logits).unwrap();
    let mut fwd = assert_record(&logits, g.get(&format!("{p}/logits")), atol, rtol);
    let loss = t.train_batch(x, &labels).unwrap();
    fwd = fwd.max(assert_record(
        &[loss],
        g.get(&format!("{p}/loss")),
        atol,
        rtol,
    ));
    let grads: Vec<f32> = init
        .iter()
        .zip(t.params().unwrap())
        .map(|(a, b)| a - b)
        .collect();
    fwd = fwd.max(assert_close(
        &format!("{p}/grad (p0 - p1 after SGD lr 1)"),
        &grads,
        &state_dict(&g, &format!("{p}/grad")),
        atol,
        rtol,
    ));

    let (atol, rtol) = TRAIN_TOL;
    let mut train = Worst::default();
    for (opt_name, opt) in [("adam", adam(1e-3)), ("sgd", sgd(0.1, 0.9))] {
        let mut t = trainer(device, kind, opt, &init);
        let want = g.get(&format!("{p}/{opt_name}/losses"));
        let losses: Vec<f32> = (0..want.data.len())
            .map(|_| t.train_batch(x, &labels).unwrap())
            .collect();
        train = train.max(assert_record(&losses, want, atol, rtol));
        train = train.max(assert_close(
            &format!("{p}/{opt_name}/final"),
            &t.params().unwrap(),
            &state_dict(&g, &format!("{p}/{opt_name}/final")),
            atol,
            rtol,
        ));
    }
    (fwd, train)
}

#[test]
fn cpu_trainer_matches_pytorch_lenet5_classic() {
    let (fwd, train) = check(Device::Cpu, ModelKind::LeNet5, "classic");
    println!("host classic worst: forward/gradients {fwd:?}, training {train:?}");
}

#[test]
fn cpu_trainer_matches_pytorch_lenet5_max() {
    let (fwd, train) = check(Device::Cpu, ModelKind::LeNet5Max, "max");
    println!("host max worst: forward/gradients {fwd:?}, training {train:?}");
}

#[test]
fn cpu_trainer_matches_pytorch_lenet5_wide() {
    let (fwd, train) = check(Device::Cpu, ModelKind::LeNet5Wide, "wide");
    println!("host wide worst: forward/gradients {fwd:?}, training {train:?}");
}

// The CUDA trainer's kernels, run by the emulated device (feature
// `cuda-emu`), against the same records and tolerances.

#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_cuda_trainer_matches_pytorch_lenet5_classic() {
    let (fwd, train) = check(Device::CudaEmu, ModelKind::LeNet5, "classic");
    println!("cuda-emu classic worst: forward/gradients {fwd:?}, training {train:?}");
}

#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_cuda_trainer_matches_pytorch_lenet5_max() {
    let (fwd, train) = check(Device::CudaEmu, ModelKind::LeNet5Max, "max");
    println!("cuda-emu max worst: forward/gradients {fwd:?}, training {train:?}");
}

#[cfg(feature = "cuda-emu")]
#[test]
fn emulated_cuda_trainer_matches_pytorch_lenet5_wide() {
    let (fwd, train) = check(Device::CudaEmu, ModelKind::LeNet5Wide, "wide");
    println!("cuda-emu wide worst: forward/gradients {fwd:?}, training {train:?}");
}

// The same on a real GPU (feature `cuda`); scripts/gpu-check.sh runs them.

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn cuda_trainer_matches_pytorch_lenet5_classic() {
    let (fwd, train) = check(Device::Cuda, ModelKind::LeNet5, "classic");
    println!("cuda classic worst: forward/gradients {fwd:?}, training {train:?}");
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn cuda_trainer_matches_pytorch_lenet5_max() {
    let (fwd, train) = check(Device::Cuda, ModelKind::LeNet5Max, "max");
    println!("cuda max worst: forward/gradients {fwd:?}, training {train:?}");
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn cuda_trainer_matches_pytorch_lenet5_wide() {
    let (fwd, train) = check(Device::Cuda, ModelKind::LeNet5Wide, "wide");
    println!("cuda wide worst: forward/gradients {fwd:?}, training {train:?}");
}
