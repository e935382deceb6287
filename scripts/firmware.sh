#!/usr/bin/env bash
# The model-to-device chain in one command, for each committed model
# (firmware/model/lenet5.q8, lenet5-max.q8, lenet5-wide.q8), or only
# LENET_MODEL=path:
#   model file
#   -> firmware release build (validates and embeds the model, picks the kernels)
#   -> all 10,000 Fashion-MNIST test images classified in QEMU
#   -> on-device accuracy, instructions per inference, flash and static RAM
#      (arm-none-eabi-size), stack high-water mark.
#
#   scripts/firmware.sh            # all 10,000 test images
#   N=1000 scripts/firmware.sh     # the first N only (quicker)
#
# Needs qemu-system-arm and arm-none-eabi-size (scripts/setup.sh installs
# them) and the Fashion-MNIST test set (FASHION_MNIST_DIR, default
# /usr/share/datasets/fashion-mnist).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
n=${N:-10000}
if [ -n "${LENET_MODEL:-}" ]; then
    models=("$(realpath "$LENET_MODEL")")
else
    models=("$root"/firmware/model/lenet5.q8 "$root"/firmware/model/lenet5-max.q8 "$root"/firmware/model/lenet5-wide.q8)
fi

for tool in qemu-system-arm arm-none-eabi-size python3; do
    command -v "$tool" >/dev/null || { echo "firmware.sh: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$data" "$n" "$work" <<'EOF'
import gzip, sys, pathlib
data, n, work = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
def idx(name):
    p = data / name
    raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
    return raw
images = idx("t10k-images-idx3-ubyte.gz")[16:]
labels = idx("t10k-labels-idx1-ubyte.gz")[8:]
(work / "images.u8").write_bytes(images[: n * 784])
(work / "labels.u8").write_bytes(labels[:n])
EOF

for model in "${models[@]}"; do
echo
echo "== model: $model"
echo "== build"
(cd "$root/firmware" && LENET_MODEL=$model CARGO_TARGET_DIR="$root/firmware/target" cargo build --release --bins)
elf="$root/firmware/target/thumbv7em-none-eabihf/release/classify"

echo "== run in QEMU (mps2-an386, cortex-m4, -icount shift=6)"
start=$(date +%s)
(cd "$work" && QEMU_TIMEOUT=${QEMU_TIMEOUT:-1800} "$root/firmware/qemu-run.sh" "$elf" 2>&1) | tee "$work/report.txt"
echo "   (QEMU wall time $(( $(date +%s) - start )) s)"

echo "== results"
python3 - "$work" <<'EOF'
import sys, pathlib
work = pathlib.Path(sys.argv[1])
labels = (work / "labels.u8").read_bytes()
preds = (work / "predictions.bin").read_bytes()[::11]
assert len(preds) == len(labels), f"{len(preds)} predictions for {len(labels)} images"
right = sum(p == l for p, l in zip(preds, labels))
print(f"on-device accuracy: {right}/{len(labels)} = {100 * right / len(labels):.2f}%")
EOF
grep -E "per inference|stack high-water" "$work/report.txt"
arm-none-eabi-size -A "$elf" | awk '
    $1 ~ /^\.(vector_table|text|rodata|data)$/ { flash += $2 }
    $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
    END { printf "flash: %d bytes (%.1f KiB)\nstatic RAM: %d bytes (%.1f KiB)\n", flash, flash/1024, ram, ram/1024 }'
arm-none-eabi-size "$elf"
done
