//! Choosing a compute back end for `--device cpu|cuda|auto`.
//!
//! CUDA support is compiled only with the `cuda` feature and loads the
//! driver library at run time, so a build with the feature still runs (on
//! the CPU) on a machine without a GPU. `auto` takes CUDA when a CUDA
//! trainer can run and says why not otherwise.

use crate::backend::{OptimizerConfig, Trainer, TrainerConfig};
use crate::progress::human_bytes;

/// Requested device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU, fast batched trainer.
    Cpu,
    /// The CPU, per-sample reference trainer on `lenet-core` (slow; the oracle).
    CpuReference,
    /// An NVIDIA GPU (feature `cuda`).
    Cuda,
    /// The CUDA trainer on the emulated device: the CUDA kernels compiled
    /// for the CPU (feature `cuda-emu`; slow, for checking).
    CudaEmu,
    /// CUDA if usable, else the CPU.
    Auto,
}

/// Back-end selection failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// `--device cuda` but CUDA cannot be used.
    #[error("--device cuda: {0}")]
    CudaUnavailable(String),
    /// `--device cuda-emu` but this build has no emulated device, or it failed.
    #[error("--device cuda-emu: {0}")]
    EmuUnavailable(String),
    /// The CPU trainer could not be built.
    #[error("CPU trainer: {0}")]
    Cpu(String),
    /// The run needs more memory than the machine has available.
    #[error("{0}")]
    Memory(String),
}

/// Whether a CUDA device can be used: `Ok(device name)` or `Err(reason)`.
pub fn cuda_status() -> Result<String, String> {
    #[cfg(feature = "cuda")]
    {
        crate::backend::gpu::cuda::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this binary was built without the `cuda` feature (cargo build --features cuda)".into())
    }
}

/// Whether this build contains the CUDA trainer on a real GPU.
pub const HAS_CUDA_TRAINER: bool = cfg!(feature = "cuda");

/// The message of a device error, without the device's name in front.
#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
fn reason(e: crate::backend::TrainerError) -> String {
    match e {
        crate::backend::TrainerError::Device { msg, .. } => msg,
        other => other.to_string(),
    }
}

/// The CUDA trainer on GPU 0 for `cfg`, initialized from `seed`, and the
/// GPU's name; or why there is none.
pub fn cuda_trainer(cfg: &TrainerConfig, seed: u64) -> Result<(Box<dyn Trainer>, String), String> {
    #[cfg(feature = "cuda")]
    {
        use crate::backend::gpu::device::Device as _;
        let dev = crate::backend::gpu::cuda::CudaDevice::new().map_err(reason)?;
        let name = dev.describe();
        let init = crate::backend::init_params(cfg.arch, seed);
        let t = crate::backend::gpu::GpuTrainer::new(dev, cfg, &init).map_err(reason)?;
        Ok((Box::new(t), name))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (cfg, seed);
        Err(cuda_status().err().unwrap_or_default())
    }
}

/// The CUDA trainer on the emulated device (threads of a block in
/// ascending order), initialized from `seed`; or why there is none.
pub fn emu_trainer(cfg: &TrainerConfig, seed: u64) -> Result<Box<dyn Trainer>, String> {
    #[cfg(feature = "cuda-emu")]
    {
        use crate::backend::gpu::emu::{EmuDevice, ThreadOrder};
        let dev = EmuDevice::new(ThreadOrder::Ascending).map_err(reason)?;
        let init = crate::backend::init_params(cfg.arch, seed);
        let t = crate::backend::gpu::GpuTrainer::new(dev, cfg, &init).map_err(reason)?;
        Ok(Box::new(t))
    }
    #[cfg(not(feature = "cuda-emu"))]
    {
        let _ = (cfg, seed);
        Err("this binary was built without the `cuda-emu` feature (cargo build --features cuda-emu)".into())
    }
}

/// `host bench --profile`: on `device` (cuda or cuda-emu), one training
/// step of `cfg` at batch `batch` timed kernel by kernel (after a warm-up
/// step), then the throughput of [`measure_gpu`](crate::backend::cpu::bench::measure_gpu)
/// over `time` and an epoch of `epoch_images`; returns the report's lines.
///
/// # Errors
/// No such device in this build, or the device failed.
pub fn gpu_profile(
    device: Device,
    cfg: &TrainerConfig,
    batch: usize,
    time: std::time::Duration,
    epoch_images: usize,
) -> Result<String, String> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let dev = crate::backend::gpu::cuda::CudaDevice::new().map_err(reason)?;
            let jit = format!(", PTX JIT {:.1} ms", dev.jit_time().as_secs_f64() * 1e3);
            profile_on(dev, &jit, cfg, batch, time, epoch_images).map_err(reason)
        }
        #[cfg(feature = "cuda-emu")]
        Device::CudaEmu => {
            use crate::backend::gpu::emu::{EmuDevice, ThreadOrder};
            let dev = EmuDevice::new(ThreadOrder::Ascending).map_err(reason)?;
            profile_on(dev, "", cfg, batch, time, epoch_images).map_err(reason)
        }
        other => {
            let _ = (cfg, batch, time, epoch_images);
            Err(format!(
                "--profile needs --device cuda or cuda-emu in a build with that feature, not {other:?}"
            ))
        }
    }
}

#[cfg(any(feature = "cuda", feature = "cuda-emu"))]
fn profile_on<D: crate::backend::gpu::device::Device>(
    dev: D,
    note: &str,
    cfg: &TrainerConfig,
    batch: usize,
    time: std::time::Duration,
    epoch_images: usize,
) -> Result<String, crate::backend::TrainerError> {
    let head = format!("device: {} ({}{note})", dev.kind(), dev.describe());
    let init = crate::backend::init_params(cfg.arch, 1);
    let mut t = crate::backend::gpu::GpuTrainer::new(dev, cfg, &init)?;
    let data = crate::backend::cpu::bench::random_dataset(batch);
    let plan = crate::backend::cpu::bench::in_order(&data, batch);
    t.profile_step(&plan)?;
    let p = t.profile_step(&plan)?;
    let r = crate::backend::cpu::bench::measure_gpu(&mut t, batch, time, epoch_images)?;
    Ok(format!(
        "{head}\none training step, batch {batch}, {} launches, {:.3} ms:\n{p}\n{r}",
        p.launches, p.step_ms
    ))
}

/// Builds a trainer for `cfg` on `device`, weights initialized from `seed`.
/// Returns the trainer and a line saying what was chosen and why.
///
/// # Errors
/// [`BackendError::CudaUnavailable`] for `Device::Cuda` without a usable
/// GPU, [`BackendError::EmuUnavailable`] for `Device::CudaEmu` without the
/// emulator.
pub fn make_trainer(
    device: Device,
    cfg: &TrainerConfig,
    seed: u64,
) -> Result<(Box<dyn Trainer>, String), BackendError> {
    match device {
        Device::Cpu => Ok((cpu_trainer(cfg, seed)?, "device: cpu".into())),
        Device::CpuReference => Ok((
            reference_trainer(cfg, seed)?,
            "device: cpu (reference trainer)".into(),
        )),
        Device::Cuda => {
            let (t, name) = cuda_trainer(cfg, seed).map_err(BackendError::CudaUnavailable)?;
            Ok((t, format!("device: cuda ({name})")))
        }
        Device::CudaEmu => {
            let t = emu_trainer(cfg, seed).map_err(BackendError::EmuUnavailable)?;
            Ok((
                t,
                "device: cuda-emu (the CUDA kernels emulated on the CPU; slow)".into(),
            ))
        }
        Device::Auto => match cuda_trainer(cfg, seed) {
            Ok((t, name)) => Ok((t, format!("device: cuda ({name}; auto)"))),
            Err(why) => Ok((
                cpu_trainer(cfg, seed)?,
                format!("device: cpu (auto: CUDA not used: {why})"),
            )),
        },
    }
}

/// Whether `dev` runs on the CPU back end (`auto` without a usable CUDA).
pub fn runs_on_cpu(dev: Device) -> bool {
    match dev {
        Device::Cpu => true,
        Device::Auto => cuda_status().is_err(),
        Device::CpuReference | Device::Cuda | Device::CudaEmu => false,
    }
}

/// The trainer of a training run: [`check_cpu_memory`] first when it runs
/// on the CPU (batches of `batch`, `data_images` images held), then
/// [`make_trainer`].
///
/// # Errors
/// Not enough memory, or see [`make_trainer`].
pub fn training_trainer(
    device: Device,
    cfg: &TrainerConfig,
    batch: usize,
    data_images: usize,
    seed: u64,
) -> Result<(Box<dyn Trainer>, String), BackendError> {
    if runs_on_cpu(device) {
        check_cpu_memory(
            cfg.arch,
            crate::backend::cpu::graph::RunKind::Train(cfg.optimizer),
            cfg.threads,
            batch,
            data_images,
            "training",
        )?;
    }
    make_trainer(device, cfg, seed)
}

/// Test hook: `LENET_MEM_AVAILABLE=BYTES` replaces `MemAvailable` in
/// [`check_cpu_memory`], so tests see a refusal on any machine.
pub const MEM_AVAILABLE_ENV: &str = "LENET_MEM_AVAILABLE";

/// Refuses, before anything is allocated, a CPU run that needs more than
/// the memory available (`MemAvailable`): the error gives the need, what
/// is available, and the largest batch that fits. `what` names the run
/// (`training`, `evaluation`, ...). Without `/proc/meminfo` the run goes on.
///
/// # Errors
/// [`BackendError::Memory`], or [`BackendError::Cpu`] for a network that
/// does not fit its input.
pub fn check_cpu_memory(
    arch: lenet_core::model::Arch,
    kind: crate::backend::cpu::graph::RunKind,
    threads: usize,
    batch: usize,
    data_images: usize,
    what: &str,
) -> Result<crate::backend::cpu::graph::MemoryNeed, BackendError> {
    use crate::backend::cpu::graph::cpu_memory;
    let need = |b: usize| {
        cpu_memory(arch, kind, threads, b, data_images)
            .map_err(|e| BackendError::Cpu(e.to_string()))
    };
    let n = need(batch)?;
    let avail = std::env::var(MEM_AVAILABLE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(crate::backend::cpu::graph::mem_available);
    let Some(avail) = avail else {
        return Ok(n);
    };
    if n.total() <= avail {
        return Ok(n);
    }
    // The need grows with the batch: the largest that fits, by bisection.
    let (mut lo, mut hi) = (0usize, batch);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if need(mid)?.total() <= avail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let fits = if lo == 0 {
        "not even a batch of 1 fits".to_string()
    } else {
        format!("the largest batch that fits is {lo}")
    };
    Err(BackendError::Memory(format!(
        "{arch} ({} parameters): {what} with batch {batch} needs {} of memory \
         (parameters {}, gradients {}, optimizer {}, activations {}, data {}), \
         but {} is available (MemAvailable): {fits}",
        arch.num_params(),
        human_bytes(n.total()),
        human_bytes(n.params),
        human_bytes(n.grads),
        human_bytes(n.optimizer),
        human_bytes(n.activations + n.workspace),
        human_bytes(n.data),
        human_bytes(avail),
    )))
}

/// The fast CPU trainer for `cfg` holding `params` ([`crate::backend::cpu::CpuTrainer`],
/// which picks its kernels by the network's shape).
fn cpu_with(cfg: &TrainerConfig, params: &[f32]) -> Result<Box<dyn Trainer>, BackendError> {
    let t = crate::backend::cpu::CpuTrainer::new(cfg, params)
        .map_err(|e| BackendError::Cpu(e.to_string()))?;
    Ok(Box::new(t))
}

/// The fast CPU trainer for `cfg`, starting from the reference
/// initialization for `seed` (PyTorch's default init, see `lenet-core`).
///
/// # Errors
/// The network does not fit its input, or the worker threads could not be
/// started.
pub fn cpu_trainer(cfg: &TrainerConfig, seed: u64) -> Result<Box<dyn Trainer>, BackendError> {
    cpu_with(cfg, &crate::backend::init_params(cfg.arch, seed))
}

/// The per-sample reference trainer for `cfg`, initialized from `seed`.
///
/// # Errors
/// The network does not fit its input, or the worker threads could not be
/// started.
pub fn reference_trainer(cfg: &TrainerConfig, seed: u64) -> Result<Box<dyn Trainer>, BackendError> {
    crate::backend::reference::new_reference(cfg, seed)
        .map_err(|e| BackendError::Cpu(e.to_string()))
}

/// [`inference_trainer`] for the model `m`, after [`check_cpu_memory`]
/// for batches of `batch` with `data_images` images held; `what` names the
/// run in the message (`evaluation`, `prediction`).
///
/// # Errors
/// Not enough memory, or see [`inference_trainer`].
pub fn model_trainer(
    m: &crate::modelfile::ModelFile,
    threads: usize,
    batch: usize,
    data_images: usize,
    what: &str,
) -> Result<Box<dyn Trainer>, BackendError> {
    check_cpu_memory(
        m.meta.arch,
        crate::backend::cpu::graph::RunKind::Infer,
        threads,
        batch,
        data_images,
        what,
    )?;
    inference_trainer(m.meta.arch, m.meta.act, &m.params, threads)
}

/// A fast CPU trainer holding `params`, for inference (eval, predict), for
/// any network (a LeNet `ModelKind` converts into its [`Arch`](lenet_core::model::Arch)).
///
/// # Errors
/// Wrong parameter count, a network that does not fit its input, or no
/// threads.
pub fn inference_trainer(
    arch: impl Into<lenet_core::model::Arch>,
    act: lenet_core::activation::Activation,
    params: &[f32],
    threads: usize,
) -> Result<Box<dyn Trainer>, BackendError> {
    let cfg = TrainerConfig {
        arch: arch.into(),
        act,
        optimizer: OptimizerConfig::Sgd {
            lr: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        threads,
        dropout_seed: 0,
    };
    cpu_with(&cfg, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lenet_core::activation::Activation;
    use lenet_core::model::ModelKind;

    fn cfg() -> TrainerConfig {
        TrainerConfig {
            arch: ModelKind::LeNet5.into(),
            act: Activation::Sigmoid,
            optimizer: OptimizerConfig::adam(1e-3),
            threads: 1,
            dropout_seed: 0,
        }
    }

    /// Without a usable CUDA trainer (no `cuda` feature, no driver, or no
    /// CUDA trainer in this build), `cuda` is a clear error and `auto`
    /// falls back to the CPU, saying why.
    #[test]
    fn cuda_falls_back_or_fails_clearly() {
        if cuda_status().is_ok() {
            return; // a GPU machine: nothing to fall back from
        }
        let why = match make_trainer(Device::Cuda, &cfg(), 0) {
            Err(BackendError::CudaUnavailable(why)) => why,
            Err(e) => panic!("unexpected error {e}"),
            Ok((t, note)) => panic!("got a {} trainer ({note})", t.device_name()),
        };
        assert!(!why.is_empty());
        #[cfg(not(feature = "cuda"))]
        assert!(why.contains("without the `cuda` feature"), "{why}");
        #[cfg(feature = "cuda")]
        assert!(
            why.contains("libcuda") || why.contains("CUDA device") || why.contains("driver"),
            "{why}"
        );
        let (t, note) = make_trainer(Device::Auto, &cfg(), 0).unwrap();
        assert_eq!(t.device_name(), "cpu");
        assert!(
            note.starts_with("device: cpu (auto: CUDA not used: "),
            "{note}"
        );
        assert!(note.contains(&why), "{note} / {why}");
        let (t, note) = make_trainer(Device::Cpu, &cfg(), 0).unwrap();
        assert_eq!((t.device_name(), note.as_str()), ("cpu", "device: cpu"));
    }
}
