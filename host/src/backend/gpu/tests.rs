//! The CUDA trainer on the emulated device: its kernels against the CPU
//! trainer for every model and activation, the CNN, VGG and AlexNet
//! (dropout, upsampling) against an independent reference, independence
//! of the thread order, and the device-side input pipeline against the
//! host's.
#![cfg(feature = "cuda-emu")]

use super::emu::{EmuDevice, ThreadOrder};
use super::*;
use crate::backend::cpu::CpuTrainer;
use crate::backend::cpu::bench::random_data;
use crate::backend::{Augment, init_params};
use crate::data::{Dataset, Normalization};
use crate::rng::SplitMix64;
use lenet_core::model::{AlexNetConfig, ModelKind, VggConfig};

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
    crate::backend::cpu::tests::assert_close(what, a, &b, f64::from(atol), f64::from(rtol));
}

#[test]
fn argument_structs_match_the_c_compiler() {
    let dev = EmuDevice::new(ThreadOrder::Ascending).unwrap();
    for k in Kernel::ALL {
        let rust = match k {
            Kernel::GatherBatch => size_of::<GatherArgs>(),
            Kernel::Conv2dForward
            | Kernel::Conv2dForwardGemm
            | Kernel::Conv2dForwardGemmLarge
            | Kernel::Conv2dBackwardInput
            | Kernel::Conv2dBackwardInputGemm
            | Kernel::Conv2dBackwardInputGemmLarge
            | Kernel::Conv2dBackwardWeight
            | Kernel::Conv2dBackwardWeightGemm
            | Kernel::Conv2dBackwardWeightGemmLarge
            | Kernel::Conv2dBackwardWeightReduce => size_of::<ConvArgs>(),
            Kernel::PoolForward | Kernel::PoolBackward => size_of::<PoolArgs>(),
            Kernel::ActivationForward => size_of::<ActArgs>(),
            Kernel::LinearForward
            | Kernel::LinearForwardLarge
            | Kernel::LinearBackwardInput
            | Kernel::LinearBackwardInputLarge
            | Kernel::LinearBackwardWeight
            | Kernel::LinearBackwardWeightLarge => size_of::<LinearArgs>(),
            Kernel::SoftmaxCrossEntropy => size_of::<LossArgs>(),
            Kernel::AdamUpdate => size_of::<AdamArgs>(),
            Kernel::SgdUpdate => size_of::<SgdArgs>(),
            Kernel::UpsampleForward | Kernel::UpsampleBackward => size_of::<UpsampleArgs>(),
            Kernel::DropoutForward | Kernel::DropoutBackward => size_of::<DropoutArgs>(),
        };
        assert_eq!(rust, dev.args_size(k), "{}", k.name());
    }
}

#[test]
fn schedules_follow_the_layer_lists() {
    for kind in ModelKind::ALL {
        assert_eq!(
            schedule_params(kind.into()).unwrap(),
            kind.num_params(),
            "{kind}"
        );
    }
    let full = [
        Arch::Vgg(VggConfig::NOTES),
        Arch::AlexNet(AlexNetConfig::NOTES),
    ];
    for arch in small_archs().into_iter().chain(full) {
        assert_eq!(schedule_params(arch).unwrap(), arch.num_params(), "{arch}");
    }
    // Conv, pool, act twice, linear (+act), linear; backward: the first
    // conv's weights only, every other layer both, and each convolution's
    // weight gradient (64 and 128 channels: split GEMMs) a second launch to
    // add its splits; gather, loss, optimizer.
    assert_eq!(schedule_launches(Arch::Cnn).unwrap(), 8 + 9 + 2 + 3);
    // Upsample, conv+act, pool, conv+act, pool, 3 linear, 2 dropouts:
    // 10 forward; backward 13: every layer's input gradient but the
    // upsample's and the first conv's (whose input is the upsampled input),
    // and the weights of 5.
    assert_eq!(schedule_launches(small_archs()[2]).unwrap(), 10 + 13 + 3);
    // (4 and 8 channels there: no GEMM; 8 and 5 convolutions of 64 channels
    // or more in the notes' VGG-11 and AlexNet: one launch more each.)
    assert_eq!(
        schedule_launches(Arch::Vgg(VggConfig::NOTES)).unwrap(),
        50 + 8
    );
    assert_eq!(
        schedule_launches(Arch::AlexNet(AlexNetConfig::NOTES)).unwrap(),
        37 + 5
    );
    let t = emu(
        &config(ModelKind::LeNet5, Activation::Sigmoid, adam()),
        ThreadOrder::Ascending,
        0,
    );
    // (the second convolution, 16 channels, adds its weight-gradient splits)
    assert_eq!(t.launches_per_step(), 22);
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

/// The emulator's checks, on its own test kernels: the block sum with its
/// barrier passes in every order; each planted bug is reported, naming
/// its check, the kernel, the block and the thread.
#[test]
fn emulator_checks_report_each_class_of_bug() {
    use super::emu::selftest;
    let orders = [
        ThreadOrder::Ascending,
        ThreadOrder::Descending,
        ThreadOrder::Shuffled(1),
    ];
    for order in orders {
        let sums = selftest(order, "selftest_sum", 3, 3).unwrap();
        assert_eq!(sums, [2080.0; 3], "{order:?}");
        let chain = selftest(ThreadOrder::Ascending, "selftest_block_chain", 5, 5).unwrap();
        assert_eq!(chain, [1.0, 2.0, 3.0, 4.0, 5.0]);
    }
    let fails = |order, name, blocks, n| match selftest(order, name, blocks, n) {
        Ok(v) => panic!("{name} in {order:?}: no error reported, out {v:?}"),
        Err(e) => e.to_string(),
    };
    // A missing barrier: in ascending order thread 0 reads before the
    // others wrote; in descending order after, in the same phase.
    let e = fails(ThreadOrder::Ascending, "selftest_racy_sum", 1, 1);
    assert!(
        e.contains("initcheck: shared element 1 of 64 read before")
            && e.contains("selftest_racy_sum block (0,0,0) thread (0,0,0)"),
        "{e}"
    );
    let e = fails(ThreadOrder::Descending, "selftest_racy_sum", 1, 1);
    assert!(
        e.contains("racecheck: shared element 0 of 64 written by thread 63")
            || e.contains(
                "racecheck: shared element 1 of 64 written by thread 1 and read by thread 0"
            ),
        "{e}"
    );
    // Equal values written by every thread: still a race.
    let e = fails(ThreadOrder::Ascending, "selftest_equal_race", 1, 1);
    assert!(
        e.contains(
            "racecheck: shared element 0 of 1 written by threads 0 and 1 between two barriers"
        ) && e.contains("(and 62 more errors in this launch)"),
        "{e}"
    );
    // A block reading what an earlier block left in shared memory.
    let e = fails(ThreadOrder::Ascending, "selftest_stale_shared", 2, 128);
    assert!(
        e.contains("selftest_stale_shared block (1,0,0)")
            && e.contains("initcheck: shared element")
            && e.contains("read before any thread of this block wrote it"),
        "{e}"
    );
    // One thread past the end of its output (the guard zone).
    let e = fails(ThreadOrder::Shuffled(2), "selftest_past_end", 2, 100);
    assert!(
        e.contains("selftest_past_end block (1,0,0) thread (36,0,0)")
            && e.contains("memcheck: write of 4 bytes")
            && e.contains("0 bytes past the end of allocation #2 (400 bytes)"),
        "{e}"
    );
    // A dependence between blocks shows in any order but ascending.
    for order in [ThreadOrder::Descending, ThreadOrder::Shuffled(5)] {
        let e = fails(order, "selftest_block_chain", 5, 5);
        assert!(
            e.contains("initcheck: read of 4 bytes at offset")
                && e.contains("allocation #2 (20 bytes)"),
            "{order:?}: {e}"
        );
    }
}

/// Bugs planted in the real kernels (`host/build.rs`), run through the
/// same op checks `host check` makes, are each reported: a pooling thread
/// past the end of its output (memcheck), the height read as the width
/// (a non-square golden record), and the convolution's weight gradient
/// without the barrier before its reduction (racecheck, or initcheck when
/// the reading thread runs first).
#[test]
fn planted_bugs_in_the_kernels_are_reported() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/ops.bin");
    let g = crate::golden::Golden::read(&path).unwrap();
    let failures = |kernel: Kernel, bug: &str, order: ThreadOrder| {
        let mut dev = EmuDevice::new(order).unwrap();
        dev.plant(kernel, bug).unwrap();
        let mut failed = Vec::new();
        super::ops::check(&mut dev, &g, &mut |p, r| {
            if let Err(e) = r {
                failed.push(format!("{p}: {e}"));
            }
        });
        failed
    };
    // The real kernels pass (the same check, unplanted).
    let mut dev = EmuDevice::new(ThreadOrder::Shuffled(9)).unwrap();
    super::ops::check(&mut dev, &g, &mut |p, r| assert!(r.is_ok(), "{p}: {r:?}"));

    let f = failures(Kernel::PoolForward, "past_end", ThreadOrder::Ascending);
    assert!(
        f.iter().any(|e| e.starts_with("max_pool2d/w2_s2: ")
            && e.contains("planted_past_end__pool_forward block")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .all(|e| e.contains("memcheck: ") && e.contains("past the end of allocation #")),
        "{f:#?}"
    );

    let f = failures(Kernel::PoolForward, "h_as_w", ThreadOrder::Ascending);
    assert!(
        f.iter()
            .any(|e| e.starts_with("max_pool2d/w3_s2_overlap: ") && e.contains("/y")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|e| e.starts_with("avg_pool2d/w3_s2_overlap: ")),
        "{f:#?}"
    );
    assert!(
        !f.iter().any(|e| e.contains("lenet_p")),
        "square inputs hide it: {f:#?}"
    );

    let f = failures(
        Kernel::Conv2dBackwardWeight,
        "no_barrier",
        ThreadOrder::Descending,
    );
    assert!(!f.is_empty(), "no_barrier not reported");
    assert!(
        f.iter().all(
            |e| e.contains("planted_no_barrier__conv2d_backward_weight block")
                && e.contains("racecheck: shared element")
        ),
        "{f:#?}"
    );
    let f = failures(
        Kernel::Conv2dBackwardWeight,
        "no_barrier",
        ThreadOrder::Ascending,
    );
    assert!(
        !f.is_empty() && f.iter().all(|e| e.contains("initcheck: shared element")),
        "{f:#?}"
    );
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

/// The networks beyond LeNet-5, small enough for the emulator: the notes'
/// CNN; VGG with three blocks at 28x28; VGG with two blocks upsampled to
/// 32x32; AlexNet at 65x65, the smallest input its layers accept.
fn small_archs() -> [Arch; 4] {
    [
        Arch::Cnn,
        Arch::Vgg(VggConfig {
            blocks: 3,
            width_div: 16,
            size: 28,
            hidden: 64,
        }),
        Arch::Vgg(VggConfig {
            blocks: 2,
            width_div: 16,
            size: 32,
            hidden: 32,
        }),
        Arch::AlexNet(AlexNetConfig {
            width_div: 16,
            size: 65,
            hidden: 64,
        }),
    ]
}

/// The trainer the CUDA trainer is held to for `small_archs`: the CPU
/// trainer (itself held to the plain-loop `reference` and to PyTorch).
fn reference_trainer(cfg: &TrainerConfig, init: &[f32]) -> Box<dyn Trainer> {
    Box::new(crate::backend::cpu::CpuTrainer::new(cfg, init).expect("CPU trainer"))
}

fn arch_config(arch: Arch, act: Activation, optimizer: OptimizerConfig) -> TrainerConfig {
    TrainerConfig {
        arch,
        dropout_seed: 0xD0_5EED,
        act,
        optimizer,
        threads: 1,
    }
}

#[test]
fn alexnet_65_is_the_smallest_input() {
    let alex = |size| {
        Arch::AlexNet(AlexNetConfig {
            width_div: 16,
            size,
            hidden: 64,
        })
    };
    assert!(alex(64).check().is_err());
    assert_eq!(alex(65).check(), Ok(()));
}

/// The CNN, VGG and AlexNet on the emulated device against the reference
/// (see `check_against_reference`).
#[test]
fn new_networks_match_the_reference() {
    check_against_reference(&|| EmuDevice::new(ThreadOrder::Shuffled(3)).unwrap());
}

/// The networks of `small_archs` on devices from `dev` against the
/// reference (`reference_trainer`): inference logits (dropout skipped),
/// the loss and the gradients of one step with dropout active (one SGD
/// step with lr 1: g = p0 - p1), within 1e-5 absolute and relative; then
/// three Adam steps with dropout, losses within 1e-5 and parameters within
/// `3 lr` (see `emulated_cuda_trainer_matches_the_cpu_trainer`).
fn check_against_reference<D: Device>(dev: &dyn Fn() -> D) {
    let plain = OptimizerConfig::Sgd {
        lr: 1.0,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    for (i, arch) in small_archs().into_iter().enumerate() {
        let (x, labels) = batch(if arch == Arch::Cnn { 4 } else { 6 }, 5 + i as u64);
        let n = labels.len();
        let acts: &[Activation] = if i == 2 {
            &[Activation::Relu, Activation::Tanh]
        } else {
            &[Activation::Relu]
        };
        for &act in acts {
            let init = init_params(arch, 11);
            let pair = |opt| {
                let cfg = arch_config(arch, act, opt);
                let want = reference_trainer(&cfg, &init);
                let got = GpuTrainer::new(dev(), &cfg, &init).unwrap();
                (want, got)
            };
            let what = format!("{arch} {act:?}");
            let (mut want, mut got) = pair(plain);
            let mut a = vec![0.0; n * 10];
            let mut b = vec![0.0; n * 10];
            want.forward(&x, &mut a).unwrap();
            got.forward(&x, &mut b).unwrap();
            assert_close(&format!("{what} logits"), &b, &a, 1e-5, 1e-5);
            let lw = want.train_batch(&x, &labels).unwrap();
            let lg = got.train_batch(&x, &labels).unwrap();
            assert_close(&format!("{what} loss"), &[lg], &[lw], 1e-5, 1e-5);
            let grad =
                |p: Vec<f32>| -> Vec<f32> { init.iter().zip(p).map(|(a, b)| a - b).collect() };
            assert_close(
                &format!("{what} gradients"),
                &grad(got.params().unwrap()),
                &grad(want.params().unwrap()),
                1e-5,
                1e-5,
            );
            let opt = adam();
            let (mut want, mut got) = pair(opt);
            for step in 0..3 {
                let lw = want.train_batch(&x, &labels).unwrap();
                let lg = got.train_batch(&x, &labels).unwrap();
                assert_close(
                    &format!("{what} Adam loss {step}"),
                    &[lg],
                    &[lw],
                    1e-5,
                    1e-5,
                );
            }
            assert_close(
                &format!("{what} Adam params"),
                &got.params().unwrap(),
                &want.params().unwrap(),
                3.0 * lr_of(opt),
                1e-4,
            );
            let (sw, sg) = (
                want.optimizer_state().unwrap(),
                got.optimizer_state().unwrap(),
            );
            assert_eq!(sw.step, sg.step);
            // Inference after training still skips dropout.
            want.forward(&x, &mut a).unwrap();
            got.forward(&x, &mut b).unwrap();
            assert_close(&format!("{what} logits after Adam"), &b, &a, 1e-4, 1e-4);
        }
    }
}

/// On a real GPU (`scripts/gpu-check.sh`): `check_against_reference` on
/// the CUDA device, then the time of a training step (Adam, dropout
/// active, inputs and labels uploaded each step) of the notes' CNN at
/// batch 256 and of their full-size VGG-11 (also with channels / 4) and
/// AlexNet at 224x224, batch 128, with the 60,000-image epoch it implies.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn cuda_device_runs_the_new_networks() {
    use crate::backend::gpu::cuda::CudaDevice;
    check_against_reference(&|| CudaDevice::new().unwrap());
    println!("cuda: the CNN, VGG and AlexNet match the reference");
    let full = [
        (Arch::Cnn, 256),
        (Arch::Vgg(VggConfig::NOTES), 128),
        (
            Arch::Vgg(VggConfig {
                width_div: 4,
                ..VggConfig::NOTES
            }),
            128,
        ),
        (Arch::AlexNet(AlexNetConfig::NOTES), 128),
    ];
    for (arch, n) in full {
        let cfg = arch_config(arch, Activation::Relu, adam());
        let init = init_params(arch, 1);
        let mut t = GpuTrainer::new(CudaDevice::new().unwrap(), &cfg, &init).unwrap();
        let (x, labels) = batch(n, 3);
        let loss = t.train_batch(&x, &labels).unwrap();
        assert!(loss.is_finite(), "{arch}: loss {loss}");
        let steps = 3;
        let start = std::time::Instant::now();
        for _ in 0..steps {
            t.train_batch(&x, &labels).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(steps);
        let epoch = ms * 60_000usize.div_ceil(n) as f64 / 1e3;
        println!(
            "cuda {arch}: batch {n}, {} launches/step, {ms:.1} ms/step, epoch (60,000 images) {epoch:.1} s",
            t.launches_per_step()
        );
    }
}

/// As `thread_order_does_not_change_a_bit`, for the networks with
/// dropout and upsampling (two Adam steps each, dropout active). The CNN
/// adds no kernel to those of LeNet-5 and VGG (its activation after
/// pooling is elementwise) and takes the emulator the longest, so it is
/// left out.
#[test]
fn new_networks_do_not_depend_on_the_thread_order() {
    for arch in small_archs().into_iter().skip(1) {
        let (x, labels) = batch(3, 9);
        let cfg = arch_config(arch, Activation::Relu, adam());
        let run = |order| {
            let mut t = emu(&cfg, order, 1);
            let losses: Vec<u32> = (0..2)
                .map(|_| t.train_batch(&x, &labels).unwrap().to_bits())
                .collect();
            let mut logits = vec![0.0f32; 30];
            t.forward(&x, &mut logits).unwrap();
            (losses, t.params().unwrap(), logits)
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let want = run(ThreadOrder::Ascending);
        for order in [ThreadOrder::Descending, ThreadOrder::Shuffled(77)] {
            let got = run(order);
            assert_eq!(got.0, want.0, "{arch} losses, {order:?}");
            assert!(
                bits(&got.1) == bits(&want.1),
                "{arch} params differ with {order:?}"
            );
            assert!(
                bits(&got.2) == bits(&want.2),
                "{arch} logits differ with {order:?}"
            );
        }
    }
}

/// Runs one kernel on the emulated device over `items` threads, with
/// `args` built from the device addresses of `inputs` (uploaded) and of
/// `outputs` zeroed buffers of the given lengths; returns the outputs.
fn run_kernel<A: args::KernelArgs>(
    kernel: Kernel,
    items: usize,
    inputs: &[&[f32]],
    outputs: &[usize],
    args: impl Fn(&[DevPtr], &[DevPtr]) -> A,
) -> Vec<Vec<f32>> {
    let mut dev = EmuDevice::new(ThreadOrder::Shuffled(5)).unwrap();
    let ins: Vec<DevPtr> = inputs
        .iter()
        .map(|v| {
            let p = dev.alloc(v.len().max(1) * 4).unwrap();
            dev.upload_slice(p, v).unwrap();
            p
        })
        .collect();
    let outs: Vec<DevPtr> = outputs
        .iter()
        .map(|&n| dev.alloc(n.max(1) * 4).unwrap())
        .collect();
    dev.launch_over(kernel, items, &args(&ins, &outs)).unwrap();
    outputs
        .iter()
        .zip(&outs)
        .map(|(&n, &p)| {
            let mut v = vec![0.0f32; n];
            dev.download_slice(&mut v, p).unwrap();
            v
        })
        .collect()
}

/// `upsample_forward` and `upsample_backward` give the bits of
/// `lenet_core::resize::forward` and `backward`: the same taps, the same
/// expression order, and the gather sums each input's contributions in
/// the order in which the reference scatters them.
#[test]
fn upsample_kernels_match_lenet_core_bit_for_bit() {
    let sizes = [
        (2, 3, 28, 28, 32, 32),
        (1, 1, 28, 28, 224, 224),
        (2, 2, 5, 7, 9, 4),
        (1, 3, 1, 3, 4, 7),
        (1, 1, 9, 6, 3, 6),
    ];
    for (k, (n, c, h, w, oh, ow)) in sizes.into_iter().enumerate() {
        let mut x = vec![0.0f32; n * c * h * w];
        let mut g = vec![0.0f32; n * c * oh * ow];
        random_data(&mut x, 40 + k as u64);
        random_data(&mut g, 50 + k as u64);
        let dims = UpsampleArgs {
            n: int(n),
            c: int(c),
            h: int(h),
            w_in: int(w),
            oh: int(oh),
            ow: int(ow),
            ..UpsampleArgs::default()
        };
        let mut want = vec![0.0f32; g.len()];
        lenet_core::resize::forward(&x, n * c, h, w, &mut want, oh, ow);
        let got = run_kernel(
            Kernel::UpsampleForward,
            g.len(),
            &[&x],
            &[g.len()],
            |i, o| UpsampleArgs {
                x: i[0],
                y: o[0],
                ..dims
            },
        );
        let what = format!("{h}x{w} -> {oh}x{ow}");
        assert!(
            got[0]
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "forward {what}"
        );
        let mut want = vec![0.0f32; x.len()];
        lenet_core::resize::backward(&g, n * c, h, w, oh, ow, &mut want);
        let got = run_kernel(
            Kernel::UpsampleBackward,
            x.len(),
            &[&x, &g],
            &[x.len()],
            |i, o| UpsampleArgs {
                x: i[0],
                dy: i[1],
                dx: o[0],
                ..dims
            },
        );
        let bad = got[0]
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            bad,
            None,
            "backward {what}: {:?}",
            bad.map(|i| (got[0][i], want[i]))
        );
    }
}

/// `dropout_forward` multiplies by `lenet_core::dropout::mask` bit for
/// bit (steps past 2^32 and a high layer index included), and
/// `dropout_backward` by the same mask times act'.
#[test]
fn dropout_kernels_match_the_core_mask_bit_for_bit() {
    let len = 5000;
    let mut x = vec![0.0f32; len];
    let mut g = vec![0.0f32; len];
    random_data(&mut x, 61);
    random_data(&mut g, 62);
    let relu = x.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>();
    for (seed, step, layer, p) in [
        (0u64, 0u64, 0u32, 0.5f32),
        (7, 1, 12, 0.1),
        (u64::MAX, (1 << 33) + 5, 39, 0.9),
        (3, 2, 4, 0.0),
    ] {
        let dims = DropoutArgs {
            seed,
            step,
            layer,
            threshold: lenet_core::dropout::threshold(p),
            scale: lenet_core::dropout::scale(p),
            len: int(len),
            ..DropoutArgs::default()
        };
        let mask: Vec<f32> = (0..len as u64)
            .map(|i| lenet_core::dropout::mask(seed, step, layer, i, p))
            .collect();
        let ones = vec![1.0f32; len];
        for input in [&ones, &x] {
            let got = run_kernel(Kernel::DropoutForward, len, &[input], &[len], |i, o| {
                DropoutArgs {
                    x: i[0],
                    y: o[0],
                    ..dims
                }
            });
            let want: Vec<u32> = input
                .iter()
                .zip(&mask)
                .map(|(a, m)| (a * m).to_bits())
                .collect();
            let got: Vec<u32> = got[0].iter().map(|v| v.to_bits()).collect();
            assert!(
                got == want,
                "forward, seed {seed} step {step} layer {layer} p {p}"
            );
        }
        let got = run_kernel(
            Kernel::DropoutBackward,
            len,
            &[&relu, &g],
            &[len],
            |i, o| DropoutArgs {
                x: i[0],
                dy: i[1],
                dx: o[0],
                act: act_code(Activation::Relu),
                ..dims
            },
        );
        let want: Vec<u32> = (0..len)
            .map(|i| (g[i] * mask[i] * Activation::Relu.derivative_from_output(relu[i])).to_bits())
            .collect();
        let got: Vec<u32> = got[0].iter().map(|v| v.to_bits()).collect();
        assert!(
            got == want,
            "backward, seed {seed} step {step} layer {layer} p {p}"
        );
    }
}

/// The emulated device behind a bookkeeper: live bytes and their
/// high-water mark, an allocation that fails on request, a free-memory
/// figure, and a kernel whose launches fault the way a GPU reports it
/// (at the next wait or copy, naming nothing).
struct Probe {
    inner: EmuDevice,
    live: std::collections::HashMap<DevPtr, usize>,
    bytes: usize,
    peak: usize,
    /// Allocations until the one that fails (1: the next).
    fail_in: Option<usize>,
    free: Option<usize>,
    fault: Option<Kernel>,
    pending: Option<String>,
    launched: Vec<Kernel>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            inner: EmuDevice::new(ThreadOrder::Shuffled(7)).unwrap(),
            live: Default::default(),
            bytes: 0,
            peak: 0,
            fail_in: None,
            free: None,
            fault: None,
            pending: None,
            launched: Vec::new(),
        }
    }

    fn fault_err(&mut self) -> Result<(), TrainerError> {
        match self.pending.take() {
            Some(msg) => Err(TrainerError::Device {
                device: "cuda-emu",
                msg,
            }),
            None => Ok(()),
        }
    }
}

impl Device for Probe {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, TrainerError> {
        if let Some(k) = self.fail_in.as_mut() {
            *k -= 1;
            if *k == 0 {
                self.fail_in = None;
                return Err(TrainerError::Device {
                    device: "cuda-emu",
                    msg: format!("out of memory allocating {bytes} bytes"),
                });
            }
        }
        let p = self.inner.alloc(bytes)?;
        self.live.insert(p, bytes);
        self.bytes += bytes;
        self.peak = self.peak.max(self.bytes);
        Ok(p)
    }
    fn free(&mut self, ptr: DevPtr) -> Result<(), TrainerError> {
        self.inner.free(ptr)?;
        self.bytes -= self.live.remove(&ptr).unwrap_or(0);
        Ok(())
    }
    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainerError> {
        self.inner.upload(dst, src)
    }
    fn zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), TrainerError> {
        self.inner.zero(dst, bytes)
    }
    fn download(&mut self, dst: &mut [u8], src: DevPtr) -> Result<(), TrainerError> {
        self.fault_err()?;
        self.inner.download(dst, src)
    }
    unsafe fn launch_raw(
        &mut self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: *const core::ffi::c_void,
        args_size: usize,
    ) -> Result<(), TrainerError> {
        self.launched.push(kernel);
        if self.fault == Some(kernel) {
            self.pending = Some("an illegal memory access was encountered".into());
            return Ok(());
        }
        if self.pending.is_some() {
            // A faulted context runs nothing more (the error is sticky).
            return Ok(());
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.inner.launch_raw(kernel, grid, block, args, args_size) }
    }
    fn sync(&mut self) -> Result<(), TrainerError> {
        self.fault_err()
    }
    fn free_memory(&mut self) -> Result<Option<usize>, TrainerError> {
        Ok(self.free)
    }
}

fn probed(cfg: &TrainerConfig, seed: u64) -> GpuTrainer<Probe> {
    GpuTrainer::new(Probe::new(), cfg, &init_params(cfg.arch, seed)).unwrap()
}

fn fresh_state() -> OptimizerState {
    OptimizerState {
        step: 0,
        m: Vec::new(),
        v: Vec::new(),
    }
}

/// Evaluation runs in chunks of the training batch, on the buffers
/// training made (the device's high-water mark does not move), with the
/// logits of one unchunked pass; before any training, inference
/// allocates no gradient buffers.
#[test]
fn evaluation_runs_in_chunks_of_the_training_batch() {
    let cfg = config(ModelKind::LeNet5Max, Activation::Relu, adam());
    let (x, _) = batch(50, 8);
    let mut whole = probed(&cfg, 3);
    let mut want = vec![0.0f32; 500];
    whole.forward(&x, &mut want).unwrap();
    assert!(
        whole.sched.vals.iter().all(|v| v.dptr == 0),
        "inference allocated gradient buffers"
    );

    let mut chunked = probed(&cfg, 3);
    let (xb, lb) = batch(8, 1);
    chunked.train_batch(&xb, &lb).unwrap();
    chunked
        .load(&init_params(cfg.arch, 3), &fresh_state())
        .unwrap();
    let trained_peak = chunked.dev.peak;
    let mut got = vec![0.0f32; 500];
    chunked.forward(&x, &mut got).unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        chunked.dev.peak <= trained_peak,
        "evaluation peaked at {} bytes, training at {trained_peak}",
        chunked.dev.peak
    );
}

/// A network whose sizes overflow the kernels' `int` is refused before
/// anything is allocated, naming the layer: VGG-11 with 100,000 hidden
/// units has a 25,088 x 100,000 weight matrix.
#[test]
fn sizes_beyond_the_kernels_indexing_are_errors() {
    let arch = Arch::Vgg(VggConfig {
        hidden: 100_000,
        ..VggConfig::NOTES
    });
    let e = schedule_params(arch).unwrap_err().to_string();
    assert!(e.contains("layer ") && e.contains("32-bit"), "{e}");
    let cfg = arch_config(arch, Activation::Relu, adam());
    let e = GpuTrainer::new(Probe::new(), &cfg, &[]).err().unwrap();
    assert!(e.to_string().contains("Linear"), "{e}");
    let fits = Arch::Vgg(VggConfig {
        hidden: 4096,
        ..VggConfig::NOTES
    });
    assert_eq!(schedule_params(fits).unwrap(), fits.num_params());
}

/// A data set with new contents at the address and length of the
/// resident one is uploaded anew: its epoch equals that of a trainer
/// that saw the same two data sets in separate allocations.
#[test]
fn a_new_data_set_at_the_same_address_is_uploaded() {
    let n = 16;
    let mut px = vec![0.0f32; n * 784];
    random_data(&mut px, 30);
    let mut data = Dataset {
        images: px.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let first = Dataset {
        images: data.images.clone(),
        labels: data.labels.clone(),
    };
    let epoch = |t: &mut GpuTrainer<Probe>, d: &Dataset| {
        let plan = EpochPlan {
            data: d,
            norm: Normalization::STANDARD,
            order: (0..n as u32).collect(),
            aug: None,
            batch_size: 8,
            lrs: vec![1e-3; 2],
        };
        let losses = t.train_epoch(&plan, &mut || {}).unwrap();
        losses.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let cfg = config(ModelKind::LeNet5, Activation::Relu, adam());
    let mut reused = probed(&cfg, 4);
    epoch(&mut reused, &data);
    let addr = data.images.as_ptr();
    for v in &mut data.images {
        *v = 255 - *v;
    }
    data.labels.rotate_left(3);
    assert_eq!(data.images.as_ptr(), addr);
    let got = epoch(&mut reused, &data);

    let mut twin = probed(&cfg, 4);
    epoch(&mut twin, &first);
    let second = Dataset {
        images: data.images.clone(),
        labels: data.labels.clone(),
    };
    assert_eq!(got, epoch(&mut twin, &second));
}

/// A failed allocation at any point of growing the buffers leaves no
/// freed buffer in use: every buffer the trainer holds is live, or it
/// holds none and its capacity is 0; the next step then runs as if the
/// failure had not happened.
#[test]
fn a_failed_allocation_leaves_no_freed_buffer_behind() {
    let cfg = config(ModelKind::LeNet5Max, Activation::Relu, adam());
    let (small, small_l) = batch(4, 1);
    let (big, big_l) = batch(8, 2);
    let mut reference = probed(&cfg, 5);
    reference.train_batch(&small, &small_l).unwrap();
    let want = reference.train_batch(&big, &big_l).unwrap();
    for k in 1.. {
        let mut t = probed(&cfg, 5);
        t.train_batch(&small, &small_l).unwrap();
        t.dev.fail_in = Some(k);
        let r = t.train_batch(&big, &big_l);
        if t.dev.fail_in.is_some() {
            // Growing took fewer than k allocations: every point is tested.
            assert!(k > 3, "only {k} allocations");
            r.unwrap();
            break;
        }
        let e = r.unwrap_err().to_string();
        assert!(e.contains("out of memory"), "{e}");
        let held: Vec<DevPtr> = t
            .sched
            .vals
            .iter()
            .flat_map(|v| [v.ptr, v.dptr, v.arg])
            .chain([t.labels])
            .filter(|&p| p != 0)
            .collect();
        assert!(
            held.iter().all(|p| t.dev.live.contains_key(p)),
            "allocation {k} failed: the trainer holds freed buffers"
        );
        assert!(
            held.is_empty() == (t.cap == 0),
            "allocation {k} failed: capacity {} with {} buffers",
            t.cap,
            held.len()
        );
        let got = t.train_batch(&big, &big_l).unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "after failure {k}");
    }
}

/// With the debug switch a faulting kernel is named, with its grid, block
/// and arguments, at its own launch; without it the fault surfaces at the
/// next copy and names no kernel.
#[test]
fn the_sync_switch_names_the_failing_kernel() {
    let cfg = config(ModelKind::LeNet5Max, Activation::Relu, adam());
    let (x, labels) = batch(4, 1);
    let mut t = probed(&cfg, 6);
    t.set_sync_launches(false);
    t.dev.fault = Some(Kernel::PoolForward);
    let e = t.train_batch(&x, &labels).unwrap_err().to_string();
    assert!(e.contains("illegal memory access"), "{e}");
    assert!(!e.contains("pool_forward"), "{e}");

    let mut t = probed(&cfg, 6);
    t.set_sync_launches(true);
    t.dev.fault = Some(Kernel::PoolForward);
    let e = t.train_batch(&x, &labels).unwrap_err().to_string();
    // The first pooling: 4 images of 6x12x12 outputs, one thread each.
    let grid = (4 * 6 * 12 * 12usize).div_ceil(256);
    assert!(
        e.contains(&format!(
            "kernel pool_forward (grid {grid}, block 256) failed: an illegal memory access"
        )),
        "{e}"
    );
    assert!(
        e.contains("arguments PoolArgs {") && e.contains("oh: 12"),
        "{e}"
    );
    assert_eq!(t.dev.launched.len(), 2, "stopped at the failing launch");
}

/// With less free device memory than a batch needs, training is refused
/// before anything is allocated, with the need, the free memory and a
/// batch size that fits, and that batch then trains.
#[test]
fn training_is_refused_beyond_the_free_device_memory() {
    let cfg = config(ModelKind::LeNet5, Activation::Relu, adam());
    let mut t = probed(&cfg, 7);
    let need = t.buffer_bytes(64, true);
    let per_image = t.buffer_bytes(1, true);
    t.dev.free = Some(need / 2);
    let before = t.dev.bytes;
    let (x, labels) = batch(64, 3);
    let e = t.train_batch(&x, &labels).unwrap_err().to_string();
    let fits = need / 2 / per_image;
    assert!(
        e.contains(&format!("a batch of 64 images needs {}", mib(need)))
            && e.contains(&format!("a batch of {fits} fits")),
        "{e}"
    );
    assert_eq!(t.dev.bytes, before, "allocated before refusing");
    let (x, labels) = batch(fits, 3);
    t.train_batch(&x, &labels).unwrap();
}

/// The profiling table of one training step: every kernel launched
/// appears with its launches, the launches add up to the step's, and the
/// kernels' times to no more than the step.
#[test]
fn a_profiled_step_accounts_for_every_launch() {
    let lenet: Arch = ModelKind::LeNet5.into();
    for arch in [lenet, small_archs()[2]] {
        let cfg = arch_config(arch, Activation::Relu, adam());
        let mut t = probed(&cfg, 8);
        let n = 3;
        let data = Dataset {
            images: (0..n * 784).map(|i| (i * 31 % 256) as u8).collect(),
            labels: (0..n).map(|i| i as u8).collect(),
        };
        let plan = EpochPlan {
            data: &data,
            norm: Normalization::STANDARD,
            order: (0..n as u32).collect(),
            aug: None,
            batch_size: n,
            lrs: vec![1e-3],
        };
        t.dev.launched.clear();
        let p = t.profile_step(&plan).unwrap();
        assert_eq!(p.launches, t.launches_per_step(), "{arch}");
        assert_eq!(t.dev.launched.len(), p.launches, "{arch}");
        for k in &t.dev.launched {
            let row = p.kernels.iter().find(|r| r.kernel == *k);
            let count = t.dev.launched.iter().filter(|l| *l == k).count();
            assert_eq!(row.map(|r| r.launches), Some(count), "{arch} {}", k.name());
        }
        assert_eq!(
            p.kernels.iter().map(|k| k.launches).sum::<usize>(),
            p.launches
        );
        let busy: f64 = p.kernels.iter().map(|k| k.ms).sum();
        assert!(p.kernels.iter().all(|k| k.ms >= 0.0));
        assert!(busy > 0.0 && busy <= p.step_ms * (1.0 + 1e-9), "{p:?}");
        let table = p.to_string();
        assert_eq!(table.lines().count(), p.kernels.len() + 2, "{table}");
        assert!(table.contains("gather_batch") && table.contains("adam_update"));
        let e = t.profile_step(&EpochPlan {
            batch_size: 1,
            ..plan
        });
        assert!(e.unwrap_err().to_string().contains("one step"));
    }
}

/// Runs `launches` (kernel, blocks, arguments built from the device
/// addresses of `inputs`, uploaded, and of `outputs`, zeroed buffers of
/// the given lengths) in order on the emulated device; returns the outputs.
fn run_launches<A: args::KernelArgs>(
    order: ThreadOrder,
    inputs: &[&[f32]],
    outputs: &[usize],
    launches: impl Fn(&[DevPtr], &[DevPtr]) -> Vec<(Kernel, usize, A)>,
) -> Vec<Vec<f32>> {
    let mut dev = EmuDevice::new(order).unwrap();
    let ins: Vec<DevPtr> = inputs
        .iter()
        .map(|v| {
            let p = dev.alloc(v.len().max(1) * 4).unwrap();
            dev.upload_slice(p, v).unwrap();
            p
        })
        .collect();
    let outs: Vec<DevPtr> = outputs
        .iter()
        .map(|&n| {
            let p = dev.alloc(n.max(1) * 4).unwrap();
            dev.upload_slice(p, &vec![0.0f32; n.max(1)]).unwrap();
            p
        })
        .collect();
    for (kernel, blocks, args) in launches(&ins, &outs) {
        dev.launch(kernel, u32::try_from(blocks).unwrap(), &args)
            .unwrap();
    }
    outputs
        .iter()
        .zip(&outs)
        .map(|(&n, &p)| {
            let mut v = vec![0.0f32; n];
            dev.download_slice(&mut v, p).unwrap();
            v
        })
        .collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; n];
    random_data(&mut v, seed);
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// The 128-wide GEMM tiles (`GemmLarge`) of the three convolution passes
/// give the bits of the 64-wide ones (each output sums its taps in the
/// same order, one fused multiply-add each) in every thread and block
/// order, on shapes that leave both tile sides partly empty, with the
/// activation fused in; and agree with the direct kernels within float
/// rounding.
#[test]
fn large_conv_tiles_give_the_small_tiles_bits() {
    let (n, k, s, p) = (2, 3, 1, 1);
    let a = Shape3 { c: 20, h: 9, w: 9 };
    let b = Shape3 { c: 130, h: 9, w: 9 };
    let kdim = a.c * k * k;
    let (x, w, bias, dy) = (
        random(n * a.len(), 1),
        random(b.c * kdim, 2),
        random(b.c, 3),
        random(n * b.len(), 4),
    );
    // Both tiles' weight gradients in the same number of splits, so that
    // they sum the same chunks.
    let splits = wgrad_splits(GemmTile::Small, b.c, kdim);
    let run = |order, [fwd, wgrad, igrad]: [Kernel; 3]| {
        let outs = [
            n * b.len(),
            n * a.len(),
            b.c * kdim,
            b.c,
            splits * b.c * kdim,
        ];
        run_launches(order, &[&x, &w, &bias, &dy], &outs, |i, o| {
            let dims = conv_dims(n, a, b, k, s, p, 2);
            let args = ConvArgs {
                x: i[0],
                w: i[1],
                b: i[2],
                dy: i[3],
                y: o[0],
                dx: o[1],
                dw: o[2],
                db: o[3],
                ..dims
            };
            let work = ConvArgs {
                y: o[4],
                splits: int(splits),
                ..args
            };
            [(fwd, args), (igrad, args), (wgrad, work)]
                .into_iter()
                .chain(kernel_tile(wgrad).map(|_| (Kernel::Conv2dBackwardWeightReduce, work)))
                .map(|(kernel, args)| {
                    // (the weight gradient's grid for these splits)
                    let blocks = match kernel_tile(kernel) {
                        Some(t) if kernel == wgrad => t.tiles(b.c, kdim) * splits,
                        _ => conv_grid(kernel, n, a, b, k),
                    };
                    (kernel, blocks, args)
                })
                .collect()
        })
    };
    let small = [
        Kernel::Conv2dForwardGemm,
        Kernel::Conv2dBackwardWeightGemm,
        Kernel::Conv2dBackwardInputGemm,
    ];
    let large = [
        Kernel::Conv2dForwardGemmLarge,
        Kernel::Conv2dBackwardWeightGemmLarge,
        Kernel::Conv2dBackwardInputGemmLarge,
    ];
    let want = run(ThreadOrder::Ascending, small);
    for order in [
        ThreadOrder::Ascending,
        ThreadOrder::Descending,
        ThreadOrder::Shuffled(21),
    ] {
        let got = run(order, large);
        for (part, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            assert!(bits(g) == bits(w), "{part} differs, {order:?}");
        }
    }
    let direct = run(
        ThreadOrder::Ascending,
        [
            Kernel::Conv2dForward,
            Kernel::Conv2dBackwardWeight,
            Kernel::Conv2dBackwardInput,
        ],
    );
    for (part, (g, d)) in ["y", "dx", "dw", "db"].iter().zip(want.iter().zip(&direct)) {
        assert_close(part, g, d, 1e-4, 1e-5);
    }
}

/// As `large_conv_tiles_give_the_small_tiles_bits`, for the three passes
/// of a linear layer.
#[test]
fn large_linear_tiles_give_the_small_tiles_bits() {
    let (n, fi, fo) = (130, 150, 140);
    let (x, w, bias, dy) = (
        random(n * fi, 5),
        random(fo * fi, 6),
        random(fo, 7),
        random(n * fo, 8),
    );
    let run = |order, kernels: [Kernel; 3]| {
        let outs = [n * fo, n * fi, fo * fi, fo];
        run_launches(order, &[&x, &w, &bias, &dy], &outs, |i, o| {
            let args = LinearArgs {
                x: i[0],
                w: i[1],
                b: i[2],
                dy: i[3],
                y: o[0],
                dx: o[1],
                dw: o[2],
                db: o[3],
                n: int(n),
                f_in: int(fi),
                f_out: int(fo),
                act: 3,
            };
            kernels
                .into_iter()
                .map(|kernel| (kernel, linear_grid(kernel, n, fi, fo), args))
                .collect()
        })
    };
    let want = run(
        ThreadOrder::Ascending,
        [
            Kernel::LinearForward,
            Kernel::LinearBackwardInput,
            Kernel::LinearBackwardWeight,
        ],
    );
    for order in [
        ThreadOrder::Ascending,
        ThreadOrder::Descending,
        ThreadOrder::Shuffled(22),
    ] {
        let got = run(
            order,
            [
                Kernel::LinearForwardLarge,
                Kernel::LinearBackwardInputLarge,
                Kernel::LinearBackwardWeightLarge,
            ],
        );
        for (part, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            assert!(bits(g) == bits(w), "{part} differs, {order:?}");
        }
    }
    // Against plain sums in f64.
    let act = |v: f64| v.tanh();
    let mut y = vec![0.0f32; n * fo];
    for r in 0..n {
        for c in 0..fo {
            let sum: f64 = (0..fi)
                .map(|i| f64::from(x[r * fi + i]) * f64::from(w[c * fi + i]))
                .sum();
            y[r * fo + c] = act(sum + f64::from(bias[c])) as f32;
        }
    }
    assert_close("y", &want[0], &y, 1e-5, 1e-5);
    let mut dw = vec![0.0f32; fo * fi];
    for o in 0..fo {
        for i in 0..fi {
            let sum: f64 = (0..n)
                .map(|r| f64::from(dy[r * fo + o]) * f64::from(x[r * fi + i]))
                .sum();
            dw[o * fi + i] = sum as f32;
        }
    }
    assert_close("dw", &want[2], &dw, 1e-5, 1e-5);
}

/// The schedule takes 128-wide tiles for large products only: both sides
/// padded little more than to 64, enough depth and enough blocks.
#[test]
fn large_tiles_are_chosen_by_shape() {
    assert_eq!(gemm_tile(1024, 8192, 576), GemmTile::Large);
    assert_eq!(gemm_tile(64, 100_352, 576), GemmTile::Small);
    // 192 rows: a third of the 128-wide tiles' rows would be empty; 96
    // rows pad to 128 either way.
    assert_eq!(gemm_tile(192, 100_352, 576), GemmTile::Small);
    assert_eq!(gemm_tile(96, 100_352, 576), GemmTile::Large);
    assert_eq!(gemm_tile(1024, 8192, 32), GemmTile::Small);
    // 4 x 9 = 36 large tiles: too few blocks.
    assert_eq!(gemm_tile(512, 1152, 4608), GemmTile::Small);
    let vgg = Shape3 {
        c: 128,
        h: 14,
        w: 14,
    };
    let into = Shape3 { c: 256, ..vgg };
    assert_eq!(
        conv_forward(128, vgg, into, 3),
        Kernel::Conv2dForwardGemmLarge
    );
    assert_eq!(
        conv_backward_input(128, vgg, into, 3, 1),
        Kernel::Conv2dBackwardInputGemmLarge
    );
    assert_eq!(
        conv_backward_weight(128, vgg, into, 3),
        Kernel::Conv2dBackwardWeightGemmLarge
    );
    assert_eq!(conv_forward(2, vgg, into, 3), Kernel::Conv2dForwardGemm);
    assert_eq!(
        linear_kernels(1024, 4096, 4096),
        [
            Kernel::LinearForwardLarge,
            Kernel::LinearBackwardInputLarge,
            Kernel::LinearBackwardWeightLarge
        ]
    );
    // A batch of 128: one row of tiles (32 blocks) for the forward pass
    // and the input gradient; the weight gradient has 1,024.
    assert_eq!(
        linear_kernels(128, 4096, 4096),
        [
            Kernel::LinearForward,
            Kernel::LinearBackwardInput,
            Kernel::LinearBackwardWeightLarge
        ]
    );
}
