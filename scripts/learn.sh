#!/usr/bin/env bash
# Learning on the device in one command:
#   shipped model (firmware/model/shipped.q8: LeNet-5 that never saw Sandal
#   and Bag, or LENET_MODEL=path) -> the firmware's `learn` program
#   -> QEMU streams the first N training images (all ten classes) through
#   it once, its last layer learning in f32, then evaluates all 10,000 test
#   images -> accuracy before and after (all, the two new classes, the
#   eight old ones), instructions per training sample and per inference,
#   static RAM, stack, flash -> the learned head in OUT (default
#   runs/learned-head.bin), which `host eval --q8 ... --head` reads.
#
#   scripts/learn.sh             # N = 2000
#   N=1000 scripts/learn.sh
#
# Needs qemu-system-arm, arm-none-eabi-size and python3 (scripts/setup.sh)
# and Fashion-MNIST (FASHION_MNIST_DIR, default
# /usr/share/datasets/fashion-mnist).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
n=${N:-2000}
model=$(realpath "${LENET_MODEL:-$root/firmware/model/shipped.q8}")
out=$(realpath -m "${OUT:-$root/runs/learned-head.bin}")

for tool in qemu-system-arm arm-none-eabi-size python3; do
    command -v "$tool" >/dev/null || { echo "learn.sh: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done

echo "== model: $model"
echo "== build (firmware/target/shipped)"
(cd "$root/firmware" && LENET_MODEL="$model" CARGO_TARGET_DIR="$root/firmware/target/shipped" \
    cargo build --release --bin learn)
elf="$root/firmware/target/shipped/thumbv7em-none-eabihf/release/learn"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$data" "$n" "$work" <<'EOF'
import gzip, sys, pathlib
data, n, work = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
def idx(name, header):
    p = data / name
    return (gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes())[header:]
(work / "train.u8").write_bytes(idx("train-images-idx3-ubyte.gz", 16)[: n * 784])
(work / "train-labels.u8").write_bytes(idx("train-labels-idx1-ubyte.gz", 8)[:n])
(work / "test.u8").write_bytes(idx("t10k-images-idx3-ubyte.gz", 16))
(work / "test-labels.u8").write_bytes(idx("t10k-labels-idx1-ubyte.gz", 8))
EOF

echo "== learn in QEMU (mps2-an386, cortex-m4, -icount shift=6): $n training images, then 10,000 test images"
start=$(date +%s)
(cd "$work" && QEMU_TIMEOUT=${QEMU_TIMEOUT:-900} "$root/firmware/qemu-run.sh" "$elf" 2>&1)
echo "   (QEMU wall time $(( $(date +%s) - start )) s)"
mkdir -p "$(dirname "$out")"
cp "$work/head.bin" "$out"
echo "== learned head: $out"
arm-none-eabi-size -A "$elf" | awk '
    $1 ~ /^\.(vector_table|text|rodata|data)$/ { flash += $2 }
    $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
    END { printf "flash: %d bytes (%.1f KiB)\nstatic RAM: %d bytes (%.1f KiB)\n", flash, flash/1024, ram, ram/1024 }'
