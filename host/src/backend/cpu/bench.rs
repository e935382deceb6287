//! Throughput and latency of the CPU back end on random data, for the CLI
//! and the criterion bench: training images/s (Adam), inference images/s,
//! and the latency of one single-image forward pass.

use std::time::{Duration, Instant};

use super::{CpuTrainer, Isa};
use crate::backend::{OptimizerConfig, Trainer, TrainerConfig, TrainerError};
use lenet_core::activation::Activation;
use lenet_core::model::ModelKind;

/// What [`bench`] measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchConfig {
    /// Network.
    pub kind: ModelKind,
    /// Hidden activation.
    pub act: Activation,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Batch size of the training and inference measurements.
    pub batch: usize,
    /// Time spent on each measurement (after one warm-up call).
    pub time: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            kind: ModelKind::LeNet5,
            act: Activation::Sigmoid,
            threads: 0,
            batch: 256,
            time: Duration::from_secs(2),
        }
    }
}

/// Measured numbers of [`bench`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchReport {
    /// Instruction set of the kernels.
    pub isa: Isa,
    /// Threads used.
    pub threads: usize,
    /// Training throughput: Adam steps on batches of `batch` images.
    pub train_img_per_s: f64,
    /// Inference throughput on batches of `batch` images.
    pub infer_img_per_s: f64,
    /// Mean latency of a forward pass on one image, in microseconds.
    pub latency_us: f64,
}

impl core::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cpu ({:?}, {} threads): train {:.0} img/s, inference {:.0} img/s, batch-1 latency {:.1} us",
            self.isa, self.threads, self.train_img_per_s, self.infer_img_per_s, self.latency_us
        )
    }
}

/// Deterministic pseudo-random data in `[-1, 1)` (xorshift).
pub fn random_data(out: &mut [f32], seed: u64) {
    let mut s = seed | 1;
    for v in out {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *v = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
}

/// `n` images of [`random_data`] pixels (seed 3) with labels `i % 10`.
pub fn random_dataset(n: usize) -> crate::data::Dataset {
    let mut px = vec![0.0f32; n * 784];
    random_data(&mut px, 3);
    crate::data::Dataset {
        images: px.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    }
}

/// One epoch over `data` in order, no augmentation, batches of `batch`,
/// learning rate 1e-3.
pub fn in_order(data: &crate::data::Dataset, batch: usize) -> crate::backend::EpochPlan<'_> {
    let n = data.labels.len();
    crate::backend::EpochPlan {
        data,
        norm: crate::data::Normalization::STANDARD,
        order: (0..n as u32).collect(),
        aug: None,
        batch_size: batch,
        lrs: vec![1e-3; n.div_ceil(batch.max(1))],
    }
}

/// Parameters drawn like PyTorch's default initialisation bounds
/// (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`), from `seed`.
pub fn random_params(kind: ModelKind, seed: u64) -> Vec<f32> {
    // Each bias has the fan-in of the weight before it: `(out, in, ...)`.
    let shapes = kind.shapes();
    let fan = |i: usize| shapes[i & !1][1..].iter().product::<usize>();
    let mut p = Vec::with_capacity(lenet_core::model::Arch::LeNet(kind).num_params());
    for (i, shape) in shapes.iter().enumerate() {
        let (len, fan) = (shape.iter().product(), fan(i));
        let mut t = vec![0.0; len];
        random_data(&mut t, seed.wrapping_mul(31).wrapping_add(i as u64));
        let bound = 1.0 / (fan as f32).sqrt();
        p.extend(t.iter().map(|v| v * bound));
    }
    p
}

/// Runs `f` repeatedly for about `time` after one warm-up call; returns
/// the mean seconds per call.
fn time_it<E>(time: Duration, mut f: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    f()?;
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < time || calls < 3 {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

/// Seconds per call of training on a batch of `batch` random images, of
/// inference on the same batch, and of inference on one image, each
/// measured for about `time` on any back end.
///
/// # Errors
/// The back end failed.
pub fn measure(
    trainer: &mut dyn Trainer,
    batch: usize,
    time: Duration,
) -> Result<(f64, f64, f64), TrainerError> {
    let n = batch.max(1);
    let mut x = vec![0.0; n * 784];
    random_data(&mut x, 7);
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    let train = time_it(time, || trainer.train_batch(&x, &labels).map(drop))?;
    let mut logits = vec![0.0; n * 10];
    let infer = time_it(time, || trainer.forward(&x, &mut logits))?;
    let mut one = [0.0; 10];
    let lat = time_it(time / 2, || trainer.forward(&x[..784], &mut one))?;
    Ok((train, infer, lat))
}

/// The Adam configuration every bench trains with.
pub fn bench_config(kind: ModelKind, act: Activation, threads: usize) -> TrainerConfig {
    TrainerConfig {
        arch: kind.into(),
        act,
        optimizer: OptimizerConfig::adam(1e-3),
        threads,
        dropout_seed: 0,
    }
}

/// Measures training and inference throughput and single-image latency.
///
/// # Errors
///
/// If the trainer cannot be built (see [`CpuTrainer::new`]).
pub fn bench(cfg: &BenchConfig) -> Result<BenchReport, TrainerError> {
    let tc = bench_config(cfg.kind, cfg.act, cfg.threads);
    let mut trainer = CpuTrainer::new(&tc, &random_params(cfg.kind, 1))?;
    let n = cfg.batch.max(1);
    let (train, infer, lat) = measure(&mut trainer, n, cfg.time)?;
    Ok(BenchReport {
        isa: trainer.isa(),
        threads: trainer.threads(),
        train_img_per_s: n as f64 / train,
        infer_img_per_s: n as f64 / infer,
        latency_us: lat * 1e6,
    })
}

/// What [`measure_gpu`] measures on a GPU back end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuBenchReport {
    /// Training images/s with batches copied from the host each step.
    pub train_img_per_s: f64,
    /// Inference images/s.
    pub infer_img_per_s: f64,
    /// Mean latency of a forward pass on one image, in microseconds.
    pub latency_us: f64,
    /// Images in the timed epoch.
    pub epoch_images: usize,
    /// Seconds of one epoch with the data resident on the device
    /// ([`Trainer::train_epoch`]: gather on the device, losses read once).
    pub epoch_seconds: f64,
}

impl core::fmt::Display for GpuBenchReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "train {:.0} img/s, inference {:.0} img/s, batch-1 latency {:.1} us; one {}-image epoch {:.1} ms ({:.0} img/s)",
            self.train_img_per_s,
            self.infer_img_per_s,
            self.latency_us,
            self.epoch_images,
            self.epoch_seconds * 1e3,
            self.epoch_images as f64 / self.epoch_seconds
        )
    }
}

/// [`measure`] on a GPU back end, plus the time of one epoch of
/// `epoch_images` random images resident on the device (after a warm-up
/// epoch that uploads them).
///
/// # Errors
/// The back end failed.
pub fn measure_gpu(
    trainer: &mut dyn Trainer,
    batch: usize,
    time: Duration,
    epoch_images: usize,
) -> Result<GpuBenchReport, TrainerError> {
    let (train, infer, lat) = measure(trainer, batch, time)?;
    let data = random_dataset(epoch_images);
    let batch = batch.max(1);
    let plan = in_order(&data, batch);
    trainer.train_epoch(&plan, &mut || {})?;
    let t0 = Instant::now();
    trainer.train_epoch(&plan, &mut || {})?;
    let epoch_seconds = t0.elapsed().as_secs_f64();
    Ok(GpuBenchReport {
        train_img_per_s: batch as f64 / train,
        infer_img_per_s: batch as f64 / infer,
        latency_us: lat * 1e6,
        epoch_images,
        epoch_seconds,
    })
}

/// What [`bench_net`] measured: the CPU trainer on any network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetBenchReport {
    /// Kernels that ran it ([`CpuTrainer::path_name`]).
    pub path: &'static str,
    /// Threads used.
    pub threads: usize,
    /// Training throughput: Adam steps on batches of `batch` images.
    pub train_img_per_s: f64,
    /// Training arithmetic rate, counting `6 x` the forward
    /// multiply-accumulates per image (forward, input and weight
    /// gradients, two flops each), as PyTorch comparisons usually do.
    pub train_gflops: f64,
    /// Inference throughput on batches of `batch` images.
    pub infer_img_per_s: f64,
    /// Inference arithmetic rate (`2 x` the forward multiply-accumulates).
    pub infer_gflops: f64,
}

impl core::fmt::Display for NetBenchReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cpu ({}, {} threads): train {:.0} img/s ({:.1} GFLOP/s), inference {:.0} img/s ({:.1} GFLOP/s)",
            self.path,
            self.threads,
            self.train_img_per_s,
            self.train_gflops,
            self.infer_img_per_s,
            self.infer_gflops
        )
    }
}

/// Measures training (Adam) and inference throughput of the CPU trainer
/// ([`CpuTrainer`]) on `arch` with random data.
///
/// # Errors
/// The trainer cannot be built or failed.
pub fn bench_net(
    arch: lenet_core::model::Arch,
    act: Activation,
    threads: usize,
    batch: usize,
    time: Duration,
) -> Result<NetBenchReport, TrainerError> {
    let tc = TrainerConfig {
        arch,
        ..bench_config(ModelKind::LeNet5, act, threads)
    };
    let mut t = CpuTrainer::new(&tc, &crate::backend::init_params(arch, 1))?;
    let n = batch.max(1);
    let mut x = vec![0.0; n * 784];
    random_data(&mut x, 7);
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    let train = time_it(time, || t.train_batch(&x, &labels).map(drop))?;
    let mut logits = vec![0.0; n * 10];
    let infer = time_it(time, || t.forward(&x, &mut logits))?;
    let macs = arch.macs() as f64;
    let (train_ips, infer_ips) = (n as f64 / train, n as f64 / infer);
    Ok(NetBenchReport {
        path: t.path_name(),
        threads: t.threads(),
        train_img_per_s: train_ips,
        train_gflops: train_ips * 6.0 * macs / 1e9,
        infer_img_per_s: infer_ips,
        infer_gflops: infer_ips * 2.0 * macs / 1e9,
    })
}

/// [`bench_config`] for any network (the LeNets' settings, `arch` in
/// place of the kind).
pub fn bench_trainer_config(
    arch: lenet_core::model::Arch,
    act: Activation,
    threads: usize,
) -> TrainerConfig {
    TrainerConfig {
        arch,
        ..bench_config(ModelKind::LeNet5, act, threads)
    }
}

/// What [`bench_cpu`] measured: [`bench`] for a LeNet, [`bench_net`] for
/// the others.
#[derive(Clone, Debug)]
pub enum CpuBench {
    /// A LeNet on the CPU trainer.
    LeNet(BenchReport),
    /// Another network on the graph trainer.
    Net(NetBenchReport),
}

impl core::fmt::Display for CpuBench {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuBench::LeNet(r) => r.fmt(f),
            CpuBench::Net(r) => r.fmt(f),
        }
    }
}

/// Throughput of `arch` on the CPU back end, batches of `batch`, `time`
/// per measurement.
///
/// # Errors
/// The trainer cannot be built or fails.
pub fn bench_cpu(
    arch: lenet_core::model::Arch,
    act: Activation,
    threads: usize,
    batch: usize,
    time: Duration,
) -> anyhow::Result<CpuBench> {
    Ok(match arch.lenet() {
        Some(kind) => CpuBench::LeNet(bench(&BenchConfig {
            kind,
            act,
            threads,
            batch,
            time,
        })?),
        None => CpuBench::Net(bench_net(arch, act, threads, batch, time)?),
    })
}
