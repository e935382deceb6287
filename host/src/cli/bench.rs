//! `host bench`: training and inference speed on random data.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use lenet_core::activation::Activation;
use lenet_core::model::Arch;

use super::args::{ActArg, DeviceArg, ModelArg, NetArgs, act_or_default};
use super::check_threads;
use crate::backend::cpu::bench::{bench_cpu, bench_trainer_config, measure_gpu};
use crate::backend::cpu::graph::RunKind;
use crate::backend::{self, Device};
use crate::modelfile::act_name;
use crate::train::MAX_BATCH;

/// `host bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Network architecture.
    #[arg(long, value_enum, default_value = "lenet5")]
    pub model: ModelArg,
    /// Options of the larger networks.
    #[command(flatten)]
    pub net: NetArgs,
    /// Hidden-layer activation [default: sigmoid for the LeNets, relu for
    /// the others].
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Batch size of the training and inference measurements.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Seconds spent on each measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Compute device: cpu (default), cuda or cuda-emu; the GPU devices also time one epoch.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Images in the epoch timed on a GPU device (random images, resident on the device).
    #[arg(long, default_value_t = 60_000, value_name = "N")]
    pub epoch_images: usize,
    /// With --device cuda or cuda-emu: first time one training step kernel by kernel (device events; the host clock on cuda-emu) and print a table of kernel, launches, total ms and % of the step.
    #[arg(long)]
    pub profile: bool,
}

/// `host bench`.
pub(super) fn run(a: BenchArgs) -> Result<()> {
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0) {
        bail!("--seconds {} must be in (0, 3600]", a.seconds);
    }
    if !(1..=MAX_BATCH).contains(&a.batch) {
        bail!("--batch {} must be in 1..={MAX_BATCH}", a.batch);
    }
    check_threads(a.threads)?;
    let arch = a.net.arch(a.model)?;
    let act = act_or_default(a.act, a.model);
    if a.profile {
        return profile(&a, arch, act);
    }
    let tc = bench_trainer_config(arch, act, a.threads);
    if backend::runs_on_cpu(a.device.device()) {
        backend::check_cpu_memory(
            arch,
            RunKind::Train(tc.optimizer),
            a.threads,
            a.batch,
            0,
            "benchmarking",
        )?;
    }
    let time = Duration::from_secs_f64(a.seconds);
    let head = match arch.lenet() {
        Some(_) => format!(
            "lenet-host {} ({arch}, {}, batch {})",
            env!("CARGO_PKG_VERSION"),
            act_name(act),
            a.batch
        ),
        None => params_head(arch, act, a.batch),
    };
    let dev = match a.device {
        DeviceArg::Cpu | DeviceArg::Auto => {
            let r = bench_cpu(arch, act, a.threads, a.batch, time)?;
            println!("{head}: {r}");
            return Ok(());
        }
        DeviceArg::CpuReference => {
            bail!("--device cpu-reference: the reference trainer is not benchmarked")
        }
        DeviceArg::Cuda => Device::Cuda,
        DeviceArg::CudaEmu => Device::CudaEmu,
    };
    check_epoch_images(a.epoch_images)?;
    let (mut t, note) = backend::make_trainer(dev, &tc, 1)?;
    let r = measure_gpu(t.as_mut(), a.batch, time, a.epoch_images)?;
    println!("{head}, {note}: {r}");
    Ok(())
}

/// The first line of a report: version, network, parameters, activation,
/// batch.
fn params_head(arch: Arch, act: Activation, batch: usize) -> String {
    format!(
        "lenet-host {} ({arch}, {} parameters, {}, batch {batch})",
        env!("CARGO_PKG_VERSION"),
        arch.num_params(),
        act_name(act),
    )
}

fn check_epoch_images(n: usize) -> Result<()> {
    if !(1..=1_000_000).contains(&n) {
        bail!("--epoch-images {n} must be in 1..=1000000");
    }
    Ok(())
}

/// `host bench --profile`: the kernel table of one step, then throughput.
fn profile(a: &BenchArgs, arch: Arch, act: Activation) -> Result<()> {
    let dev = match a.device {
        DeviceArg::Cuda => Device::Cuda,
        DeviceArg::CudaEmu => Device::CudaEmu,
        _ => bail!("--profile needs --device cuda or cuda-emu"),
    };
    check_epoch_images(a.epoch_images)?;
    let tc = bench_trainer_config(arch, act, a.threads);
    let time = Duration::from_secs_f64(a.seconds);
    let report = backend::gpu_profile(dev, &tc, a.batch, time, a.epoch_images)
        .map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
    println!("{}", params_head(arch, act, a.batch));
    println!("{report}");
    Ok(())
}
