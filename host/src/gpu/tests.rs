//! The CUDA trainer on the emulated device: its kernels against the CPU
//! trainer for every model and activation, independence of the thread
//! order, and the device-side input pipeline against the host's.
#![cfg(feature = "cuda-emu")]

use super::emu::{EmuDevice, ThreadOrder};
use super::*;
use crate::cpu::CpuTrainer;
use crate::cpu::bench::random_data;
use crate::data::{Dataset, Normalization};
use crate::reference::init_params;
use crate::rng::SplitMix64;
use crate::trainer::Augment;

fn adam() -> OptimizerConfig {
    OptimizerConfig::Adam {
        lr: 2e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 1e-4,
    }
}

fn sgd() -> OptimizerConfig {
    OptimizerConfig::Sgd {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
    }
}

fn config(kind: ModelKind, act: Activation, optimizer: OptimizerConfig) -> TrainerConfig {
    TrainerConfig {
        arch: kind.into(),
        dropout_seed: 0,
        act,
        optimizer,
        threads: 1,
    }
}

fn emu(cfg: &TrainerConfig, order: ThreadOrder, seed: u64) -> GpuTrainer<EmuDevice> {
    let init = init_params(cfg.arch, seed);
    GpuTrainer::new(EmuDevice::new(order).unwrap(), cfg, &init).unwrap()
}

fn batch(n: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut x = vec![0.0; n * 784];
    random_data(&mut x, seed);
    let labels = (0..n)
        .map(|i| ((i * 7 + seed as usize) % 10) as u8)
        .collect();
    (x, labels)
}

/// The CPU trainer tests' check, `|a - b| <= atol + rtol |b|`, on `f32`
/// references.
#[track_caller]
fn assert_close(what: &str, a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    let b: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    crate::cpu::tests::assert_close(what, a, &b, f64::from(atol), f64::from(rtol));
}

#[test]
fn argument_structs_match_the_c_compiler() {
    let dev = EmuDevice::new(ThreadOrder::Ascending).unwrap();
    for k in Kernel::ALL {
        let rust = match k {
            Kernel::GatherBatch => size_of::<GatherArgs>(),
            Kernel::Conv2dForward | Kernel::Conv2dBackwardInput | Kernel::Conv2dBackwardWeight => {
                size_of::<ConvArgs>()
            }
            Kernel::PoolForward | Kernel::PoolBackward => size_of::<PoolArgs>(),
            Kernel::ActivationForward => size_of::<ActArgs>(),
            Kernel::LinearForward | Kernel::LinearBackwardInput | Kernel::LinearBackwardWeight => {
                size_of::<LinearArgs>()
            }
            Kernel::SoftmaxCrossEntropy => size_of::<LossArgs>(),
            Kernel::AdamUpdate => size_of::<AdamArgs>(),
            Kernel::SgdUpdate => size_of::<SgdArgs>(),
        };
        assert_eq!(rust, dev.args_size(k), "{}", k.name());
    }
}

#[test]
fn schedules_follow_the_layer_lists() {
    for kind in ModelKind::ALL {
        assert_eq!(schedule_params(kind).unwrap(), kind.num_params(), "{kind}");
    }
    let t = emu(
        &config(ModelKind::LeNet5, Activation::Sigmoid, adam()),
        ThreadOrder::Ascending,
        0,
    );
    assert_eq!(t.launches_per_step(), 21);
}

/// Logits, the loss, the gradients and three optimizer steps of every
/// model and activation agree with the CPU trainer. The two sum in
/// different orders, so they agree within float rounding: logits, losses
/// and gradients within 1e-5 (absolute and relative). After three steps a
/// parameter whose gradient is rounding noise can still differ by Adam's
/// step, about `lr` per step, so trajectories are held to `3 lr`.
#[test]
fn emulated_cuda_trainer_matches_the_cpu_trainer() {
    let (x, labels) = batch(12, 5);
    let plain = OptimizerConfig::Sgd {
        lr: 1.0,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    for kind in ModelKind::ALL {
        for act in [Activation::Sigmoid, Activation::Relu, Activation::Tanh] {
            let init = init_params(kind.into(), 11);
            let pair = |opt| {
                let cfg = config(kind, act, opt);
                let cpu = CpuTrainer::new(&cfg, &init).unwrap();
                let gpu = GpuTrainer::new(
                    EmuDevice::new(ThreadOrder::Shuffled(3)).unwrap(),
                    &cfg,
                    &init,
                )
                .unwrap();
                (cpu, gpu)
            };
            let what = format!("{kind} {act:?}");
            // One SGD step with lr 1 recovers the gradients: g = p0 - p1.
            let (mut cpu, mut gpu) = pair(plain);
            let mut a = vec![0.0; 120];
            let mut b = vec![0.0; 120];
            cpu.forward(&x, &mut a).unwrap();
            gpu.forward(&x, &mut b).unwrap();
            assert_close(&format!("{what} logits"), &b, &a, 1e-5, 1e-5);
            let lc = cpu.train_batch(&x, &labels).unwrap();
            let lg = gpu.train_batch(&x, &labels).unwrap();
            assert_close(&format!("{what} loss"), &[lg], &[lc], 1e-5, 1e-5);
            let grad =
                |p: Vec<f32>| -> Vec<f32> { init.iter().zip(p).map(|(a, b)| a - b).collect() };
            assert_close(
                &format!("{what} gradients"),
                &grad(gpu.params().unwrap()),
                &grad(cpu.params().unwrap()),
                1e-5,
                1e-5,
            );
            for opt in [adam(), sgd()] {
                let (mut cpu, mut gpu) = pair(opt);
                for step in 0..3 {
                    let lc = cpu.train_batch(&x, &labels).unwrap();
                    let lg = gpu.train_batch(&x, &labels).unwrap();
                    assert_close(
                        &format!("{what} {opt:?} loss {step}"),
                        &[lg],
                        &[lc],
                        1e-5,
                        1e-5,
                    );
                }
                assert_close(
                    &format!("{what} {opt:?} params"),
                    &gpu.params().unwrap(),
                    &cpu.params().unwrap(),
                    3.0 * lr_of(opt),
                    1e-4,
                );
                let (sc, sg) = (
                    cpu.optimizer_state().unwrap(),
                    gpu.optimizer_state().unwrap(),
                );
                assert_eq!(sc.step, sg.step);
                assert_eq!((sc.m.len(), sc.v.len()), (sg.m.len(), sg.v.len()), "{what}");
            }
        }
    }
}

/// Threads of a block run in any order on a GPU: the emulator runs them
/// ascending, descending and shuffled, and the results must be the same
/// bits (a missing `__syncthreads` or a write race would change them).
#[test]
fn thread_order_does_not_change_a_bit() {
    let (x, labels) = batch(40, 9);
    for kind in [ModelKind::LeNet5, ModelKind::LeNet5Max] {
        let cfg = config(kind, Activation::Relu, adam());
        let run = |order| {
            let mut t = emu(&cfg, order, 1);
            let losses: Vec<u32> = (0..2)
                .map(|_| t.train_batch(&x, &labels).unwrap().to_bits())
                .collect();
            (losses, t.params().unwrap())
        };
        let want = run(ThreadOrder::Ascending);
        for order in [ThreadOrder::Descending, ThreadOrder::Shuffled(77)] {
            let got = run(order);
            assert_eq!(got.0, want.0, "{kind} losses, {order:?}");
            assert!(
                got.1
                    .iter()
                    .zip(&want.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind} params differ with {order:?}"
            );
        }
    }
}

/// The emulator finds what the order test is for: a block sum without its
/// barrier gives different results in different thread orders, the same
/// sum with the barrier does not.
#[test]
fn emulator_exposes_a_missing_barrier() {
    let asc = super::emu::selftest(ThreadOrder::Ascending).unwrap();
    let desc = super::emu::selftest(ThreadOrder::Descending).unwrap();
    let shuf = super::emu::selftest(ThreadOrder::Shuffled(1)).unwrap();
    for (with_barrier, _) in [asc, desc, shuf] {
        assert_eq!(with_barrier, 2080.0);
    }
    assert_eq!(desc.1, 2080.0, "thread 0 last: the race is hidden");
    assert_ne!(asc.1, desc.1, "thread 0 first: it reads unwritten values");
}

/// The device's input pipeline (gather, augment, normalize from the
/// resident training set) gives the same bits as the host's batches.
#[test]
fn device_batches_equal_host_batches() {
    let n = 70;
    let mut px = vec![0.0f32; n * 784];
    random_data(&mut px, 21);
    let data = Dataset {
        images: px.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let mut rng = SplitMix64::new(5);
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    let aug = Some(order.iter().map(|_| Augment::draw(2, &mut rng)).collect());
    let plan = EpochPlan {
        data: &data,
        norm: Normalization {
            mean: 0.286,
            std: 0.353,
        },
        order,
        aug,
        batch_size: 32,
        lrs: vec![1e-3, 2e-3, 3e-3],
    };
    let cfg = config(ModelKind::LeNet5, Activation::Tanh, adam());
    let mut on_device = emu(&cfg, ThreadOrder::Ascending, 2);
    let mut steps = 0;
    let losses = on_device.train_epoch(&plan, &mut || steps += 1).unwrap();
    assert_eq!((steps, losses.len()), (3, 3));

    let mut from_host = emu(&cfg, ThreadOrder::Ascending, 2);
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    for (b, want) in losses.iter().enumerate() {
        plan.batch(b, &mut x, &mut labels);
        from_host.set_lr(plan.lrs[b]);
        let got = from_host.train_batch(&x, &labels).unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "loss of step {b}");
    }
    assert_eq!(on_device.params().unwrap(), from_host.params().unwrap());
}

/// What `load` refuses, and a checkpoint's state moving between devices.
#[test]
fn state_round_trips_and_bad_state_is_an_error() {
    let cfg = config(ModelKind::LeNet5Max, Activation::Relu, adam());
    let (x, labels) = batch(8, 3);
    let mut a = emu(&cfg, ThreadOrder::Ascending, 4);
    a.train_batch(&x, &labels).unwrap();
    let (p, s) = (a.params().unwrap(), a.optimizer_state().unwrap());
    let mut cpu = CpuTrainer::new(&cfg, &p).unwrap();
    cpu.load(&p, &s).unwrap();
    let mut b = emu(&cfg, ThreadOrder::Ascending, 9);
    b.load(&p, &s).unwrap();
    let lc = cpu.train_batch(&x, &labels).unwrap();
    let lb = b.train_batch(&x, &labels).unwrap();
    let la = a.train_batch(&x, &labels).unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_close("loss after resume on the CPU", &[lc], &[la], 1e-5, 1e-5);
    assert_eq!(a.params().unwrap(), b.params().unwrap());
    let short = &p[..p.len() - 1];
    let e = b.load(short, &s).unwrap_err().to_string();
    assert!(e.contains("expected 44426 parameters"), "{e}");
    let bad = OptimizerState {
        m: vec![0.0; 3],
        ..s.clone()
    };
    let e = b.load(&p, &bad).unwrap_err().to_string();
    assert!(e.contains("first moment has 3 values"), "{e}");
    let e = b
        .forward(&x[..100], &mut [0.0; 10])
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not make whole images"), "{e}");
}
