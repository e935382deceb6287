#!/usr/bin/env bash
# Host speed, side by side in one run on this machine: lenet-host's CPU back
# end (`host bench`), PyTorch (benches/pytorch_bench.py) and ONNX Runtime
# (benches/onnxruntime_bench.py), all on the classic LeNet-5 with random
# data, the same batch size and the same thread count.
#
#   scripts/bench.sh                      # 2 threads, batch 256, sigmoid
#   THREADS=1 ACT=relu scripts/bench.sh
#   CNN=1 scripts/bench.sh                # then the notes' CNN (below)
#
# CNN=1 adds the course notes' 64/128-channel CNN (ReLU, Adam lr 1e-3, the
# same batch and threads): `host bench --model cnn` when this build has it,
# then PyTorch 2.x from a virtual environment (TORCH2_VENV, default
# /work/venv-torch2, created with `python3 -m venv` and `pip install torch`
# the first time: PyTorch's CPU-only wheel index when it answers, else
# PyPI) and Debian's PyTorch 1.13. Each times CNN_WARMUP untimed steps,
# then CNN_SECONDS (default 30) of training steps, and prints images/s and
# GFLOP/s (3 x 2 x 10,132,224 forward multiply-accumulates per image).
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

[[ "${CNN:-0}" == 1 ]] || exit 0

cnn_seconds=${CNN_SECONDS:-30}
cnn_warmup=${CNN_WARMUP:-3}
venv=${TORCH2_VENV:-/work/venv-torch2}
echo "== cnn (relu, batch $batch, $threads threads, $cnn_warmup warm-up steps, ${cnn_seconds} s of steps)"
host="${CARGO_TARGET_DIR:-target}/release/host"
if "$host" bench --help 2>&1 | grep -q -- '--model' && "$host" bench --help 2>&1 | grep -qw cnn; then
    "$host" bench --threads "$threads" --model cnn --act relu --batch "$batch" --seconds "$cnn_seconds"
else
    echo "host: skipped (this build's \`host bench\` has no --model cnn)"
fi
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "-- creating $venv with PyTorch 2.x (a few minutes)"
    python3 -m venv "$venv"
    if curl -sfI --max-time 10 https://download.pytorch.org/whl/cpu/ >/dev/null 2>&1; then
        "$venv/bin/pip" install -q torch numpy --index-url https://download.pytorch.org/whl/cpu
    else
        "$venv/bin/pip" install -q torch numpy
    fi
fi
cnn_args=(--threads "$threads" --model cnn --act relu --batch "$batch"
    --warmup "$cnn_warmup" --seconds "$cnn_seconds" --infer-seconds 3)
"$venv/bin/python" benches/pytorch_bench.py "${cnn_args[@]}"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 benches/pytorch_bench.py "${cnn_args[@]}"
else
    echo "pytorch 1.13: skipped (apt-get install python3-torch)"
fi
