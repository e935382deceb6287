#!/usr/bin/env bash
# The CUDA trainer on a real NVIDIA GPU, from a checkout: builds the GPU
# bundle (scripts/gpu-bundle.sh) and runs it (run.sh: golden checks,
# compute-sanitizer, kernel times, images/s of every network, a 3-epoch run
# beside the CPU's, PyTorch side by side; about 5 minutes). On a GPU
# machine without a Rust toolchain, carry target/gpu-bundle there and run
# `sh run.sh` in it instead.
#
#   bash scripts/gpu-check.sh            # needs the NVIDIA driver (R525+)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/gpu-bundle.sh
exec sh target/gpu-bundle/run.sh
