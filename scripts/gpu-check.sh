#!/usr/bin/env bash
# The CUDA trainer on a real NVIDIA GPU, in one run (under 8 minutes on an
# H100): builds with --features cuda, runs the golden tests on the device
# (forward, gradients, 10 Adam and 5 SGD steps against PyTorch, every
# model), checks the notes' CNN, VGG and AlexNet (dropout, upsampling)
# against the reference and times their training steps (VGG-11 and AlexNet
# at 224x224), benchmarks it, trains the default recipe on the GPU and on
# the CPU, and prints one table.
#
#   bash scripts/gpu-check.sh            # needs the NVIDIA driver (R525+)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
host="$CARGO_TARGET_DIR/release/host"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "build (release, --features cuda)"
cargo build -q --release -p lenet-host --features cuda
"$host" info | grep '^cuda'
"$host" info | grep -q '^cuda: not usable' && { echo "gpu-check: no usable GPU" >&2; exit 1; }

step "golden tests on the GPU (against PyTorch, the tolerances of the CPU trainer)"
cargo test -q --release --features cuda --test golden_host --test golden_nets -- --include-ignored --nocapture 2>&1 |
    grep -E 'worst|test result|panicked|FAILED'

step "the notes' CNN (batch 256), VGG-11, VGG-11 / 4 and AlexNet (224x224, batch 128) on the GPU"
cargo test -q --release -p lenet-host --features cuda,cuda-emu --lib \
    gpu::tests::cuda_device_runs_the_new_networks -- --ignored --nocapture 2>&1 |
    grep -E '^cuda|test result|panicked|FAILED'

step "host bench --device cuda (batch 256, Adam; one 60,000-image epoch resident on the GPU)"
for model in lenet5 lenet5-max lenet5-wide; do
    "$host" bench --device cuda --model "$model" --batch 256 --seconds 2 | tee -a "$out/bench.txt"
done
"$host" bench --device cpu --batch 256 --seconds 2 | tee "$out/bench-cpu.txt"

step "host bench --device cuda, the notes' networks (epochs of 60,000 / 12,800 / 6,400 images)"
"$host" bench --device cuda --model cnn --batch 256 --seconds 2 | tee -a "$out/bench-nets.txt"
"$host" bench --device cuda --model vgg --width-div 4 --batch 128 --seconds 5 --epoch-images 12800 |
    tee -a "$out/bench-nets.txt"
"$host" bench --device cuda --model alexnet --batch 128 --seconds 5 --epoch-images 12800 |
    tee -a "$out/bench-nets.txt"
"$host" bench --device cuda --model vgg --batch 64 --seconds 5 --epoch-images 6400 |
    tee -a "$out/bench-nets.txt"

step "the default training run (host train: classic LeNet-5, 30 epochs), GPU and CPU"
start=$(date +%s.%N)
"$host" train --device cuda --out "$out/cuda" 2>&1 | grep -E 'device|test accuracy'
gpu_wall=$(python3 -c "print($(date +%s.%N) - $start)")
start=$(date +%s.%N)
"$host" train --device cpu --out "$out/cpu" 2>&1 | grep -E 'device|test accuracy'
cpu_wall=$(python3 -c "print($(date +%s.%N) - $start)")

step "summary"
python3 - "$out" "$gpu_wall" "$cpu_wall" <<'PY'
import csv, re, sys
out, gpu_wall, cpu_wall = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def run(d):
    rows = list(csv.DictReader(open(f"{out}/{d}/metrics.csv")))
    secs = [float(r["seconds"]) for r in rows]
    return (sum(secs) / len(secs), min(secs), sum(float(r["images_per_sec"]) for r in rows) / len(rows),
            100 * float(rows[-1]["test_acc"]))
g, c = run("cuda"), run("cpu")
bench = open(f"{out}/bench.txt").read().splitlines()[0]
epoch_ms = re.search(r"epoch ([\d.]+) ms", bench).group(1)
print(f"{'':44}{'GPU (cuda)':>16}{'CPU':>16}")
print(f"{'default run: mean epoch time (s)':44}{g[0]:>16.3f}{c[0]:>16.3f}")
print(f"{'default run: fastest epoch (s)':44}{g[1]:>16.3f}{c[1]:>16.3f}")
print(f"{'default run: training images/s':44}{g[2]:>16.0f}{c[2]:>16.0f}")
print(f"{'default run: test accuracy after 30 epochs':44}{g[3]:>15.2f}%{c[3]:>15.2f}%")
print(f"{'default run: wall time incl. evaluations (s)':44}{gpu_wall:>16.1f}{cpu_wall:>16.1f}")
print(f"{'bench: one 60,000-image epoch, batch 256 (ms)':44}{epoch_ms:>16}")
PY
