#!/usr/bin/env bash
# Host speed, side by side in one run on this machine: lenet-host's CPU back
# end (`host bench`), PyTorch (benches/pytorch_bench.py) and ONNX Runtime
# (benches/onnxruntime_bench.py), all on the classic LeNet-5 with random
# data, the same batch size and the same thread count.
#
#   scripts/bench.sh                      # 2 threads, batch 256, sigmoid
#   THREADS=1 ACT=relu scripts/bench.sh
#
# PyTorch comes from Debian (`apt-get install python3-torch`, for
# /usr/bin/python3); ONNX Runtime from PyPI (`pip install onnxruntime onnx
# numpy`, for `python3`). A baseline that is not installed is skipped with
# a note.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
act=${ACT:-sigmoid}
model=${MODEL:-lenet5}
batch=${BATCH:-256}
seconds=${SECONDS_EACH:-3}
args=(--threads "$threads" --model "$model" --act "$act" --batch "$batch" --seconds "$seconds")

cargo build --release -q -p lenet-host
echo "== $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"${CARGO_TARGET_DIR:-target}/release/host" bench "${args[@]}"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 benches/pytorch_bench.py "${args[@]}"
else
    echo "pytorch: skipped (apt-get install python3-torch)"
fi
if python3 -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then
    python3 benches/onnxruntime_bench.py "${args[@]}"
else
    echo "onnxruntime: skipped (pip install onnxruntime onnx numpy)"
fi
