#!/usr/bin/env bash
# Builds the GPU bundle: one folder that proves and measures the CUDA
# trainer on a machine with only the NVIDIA driver and a POSIX shell (see
# scripts/gpu-bundle/run.sh). It holds the stripped `host` binary (features
# cuda and cuda-emu, so the same bundle is rehearsed on the emulated
# device), the golden files, the Fashion-MNIST files, run.sh and the
# PyTorch baseline script; at most 48 MiB.
#
#   bash scripts/gpu-bundle.sh [DIR]     # default target/gpu-bundle
#   sh target/gpu-bundle/run.sh          # on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/gpu-bundle}
max_bytes=$((48 << 20))

data=""
for d in "${FASHION_MNIST_DIR:-}" data/fashion-mnist /usr/share/datasets/fashion-mnist; do
    if [ -n "$d" ] && [ -f "$d/train-images-idx3-ubyte.gz" ]; then data=$d; break; fi
done
[ -n "$data" ] || { echo "gpu-bundle: no Fashion-MNIST (.gz IDX files); run scripts/setup.sh" >&2; exit 1; }

cargo build -q --release -p lenet-host --features cuda,cuda-emu
target="${CARGO_TARGET_DIR:-target}"
rm -rf "$dest"
mkdir -p "$dest/golden" "$dest/data"
cp "$target/release/host" "$dest/host"
strip "$dest/host"
cp tests/golden/lenet.bin tests/golden/nets.bin tests/golden/ops.bin "$dest/golden/"
for f in train-images-idx3 train-labels-idx1 t10k-images-idx3 t10k-labels-idx1; do
    cp "$data/$f-ubyte.gz" "$dest/data/"
done
cp scripts/gpu-bundle/run.sh scripts/gpu-bundle/pytorch_bench.py "$dest/"
size=$(du -sb "$dest" | cut -f1)
echo "gpu-bundle: $dest, $(awk -v b="$size" 'BEGIN { printf "%.1f MiB", b / 1048576 }') (limit 48 MiB)"
du -b "$dest/host" "$dest/golden" "$dest/data" | awk '{ printf "  %6.1f MiB  %s\n", $1 / 1048576, $2 }'
if [ "$size" -gt "$max_bytes" ]; then
    echo "gpu-bundle: $size bytes is over the 48 MiB limit" >&2
    exit 1
fi
