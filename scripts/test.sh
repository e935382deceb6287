#!/usr/bin/env bash
# The project's whole test suite, as CI runs it: formatting, lints, the
# no_std build for the Cortex-M4F, unit tests, doctests, golden tests, the
# firmware's golden test in QEMU, and the firmware learning in QEMU against
# lenet-core on the host; then the GPU bundle is built and rehearsed offline,
# and the CUDA kernels are checked (PTX, ptxas, the static speed model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check
(cd firmware && cargo fmt --check)

step "clippy (workspace, and host with the CUDA back end and its emulator)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p lenet-host --features cuda,cuda-emu --all-targets -- -D warnings


step "no_std build of lenet-core for thumbv7em-none-eabihf"
cargo build -p lenet-core --target thumbv7em-none-eabihf
cargo build -p lenet-core --target thumbv7em-none-eabihf --features micromath,defmt

step "firmware: clippy and release build"
(cd firmware && cargo clippy --release -- -D warnings && cargo build --release)
# The max-pooling kernels are compiled only for their models.
for m in lenet5-max lenet5-wide; do
    (cd firmware && LENET_MODEL=model/$m.q8 cargo clippy --release -- -D warnings)
done

step "tests (unit, integration, golden, doctests, firmware in QEMU)"
# Default features: the golden tolerances are stated for libm's exp.
cargo test --workspace
# lenet-core's own tests with its optional features (micromath's exp, defmt);
# the host with the CUDA back end compiled in (no GPU needed: it must fall
# back to the CPU, or fail clearly for --device cuda) and the CUDA trainer
# on the emulated device (its kernels compiled for the CPU) against the CPU
# trainer and, in the golden test, against PyTorch.
cargo test -p lenet-core --all-features
cargo test -p lenet-host --features cuda,cuda-emu
cargo test --test golden_host --test golden_nets --features cuda-emu

step "GPU bundle: build it, rehearse its run.sh offline on the emulated device"
bash scripts/gpu-bundle.sh
bash scripts/gpu-rehearse.sh

step "CUDA kernels: checked-in PTX matches the sources; ptxas for sm_70, sm_80, sm_90; the static model"
bash scripts/cuda-check.sh target/gpu-bundle/host
