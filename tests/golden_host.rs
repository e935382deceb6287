//! The host's fast CPU trainer against PyTorch on the LeNet-5 golden batch
//! (`tests/golden/lenet.bin`, written by `tests/golden/gen_golden.py`):
//! logits, gradients (one SGD step with lr 1 recovers them exactly:
//! `g = p0 - p1`), 10 Adam steps and 5 SGD-with-momentum steps.
//!
//! The comparisons are `lenet_host::check::lenet`, the code `host check`
//! runs, driven through the `Trainer` trait only, so the test holds
//! whatever kernels the back end uses to the same numbers: the CPU
//! trainer, and with the `cuda-emu` feature the CUDA trainer's kernels on
//! the emulated device.

use lenet_core::model::ModelKind;
use lenet_host::backend::Device;
use lenet_host::check::{self, Outcome};
use lenet_host::golden::Golden;
use std::path::Path;

fn run(device: Device, kind: ModelKind, name: &str) -> Outcome {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let g = Golden::read(&dir.join("lenet.bin")).unwrap_or_else(|e| panic!("{e}"));
    check::lenet(&g, device, kind, name, check::Scope::Full).unwrap_or_else(|e| panic!("{e}"))
}

/// The three LeNet-5 groups on one device, each a test of its own.
macro_rules! lenet_tests {
    ($device:expr, $tag:literal, $($(#[$attr:meta])* $test:ident: $kind:ident, $name:literal;)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $test() {
                let o = run($device, ModelKind::$kind, $name);
                println!(
                    "{} {} worst: forward/gradients {:?}, training {:?}",
                    $tag, $name, o.forward, o.train
                );
            }
        )+
    };
}

lenet_tests! { Device::Cpu, "host",
    cpu_trainer_matches_pytorch_lenet5_classic: LeNet5, "classic";
    cpu_trainer_matches_pytorch_lenet5_max: LeNet5Max, "max";
    cpu_trainer_matches_pytorch_lenet5_wide: LeNet5Wide, "wide";
}

// The CUDA trainer's kernels, run by the emulated device (feature
// `cuda-emu`), against the same records and tolerances.
#[cfg(feature = "cuda-emu")]
lenet_tests! { Device::CudaEmu, "cuda-emu",
    emulated_cuda_trainer_matches_pytorch_lenet5_classic: LeNet5, "classic";
    emulated_cuda_trainer_matches_pytorch_lenet5_max: LeNet5Max, "max";
    emulated_cuda_trainer_matches_pytorch_lenet5_wide: LeNet5Wide, "wide";
}

// The same on a real GPU (feature `cuda`): `host check --device cuda` runs
// these checks from a bundle with no Rust toolchain.
#[cfg(feature = "cuda")]
lenet_tests! { Device::Cuda, "cuda",
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_lenet5_classic: LeNet5, "classic";
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_lenet5_max: LeNet5Max, "max";
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_lenet5_wide: LeNet5Wide, "wide";
}
