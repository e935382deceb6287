#!/usr/bin/env bash
# The main job, end to end on one machine:
#   set up -> train LeNet-5 on Fashion-MNIST (the `host train` defaults)
#   -> evaluate -> classify test images -> export int8 -> classify the whole
#   test set on the Cortex-M4 firmware in QEMU.
#
#   scripts/run.sh                       # default recipe into runs/lenet5-sigmoid
#   scripts/run.sh --epochs 5            # extra flags go to `host train`
#   OUT=runs/mine scripts/run.sh ...     # another output directory
#   FIRMWARE=0 scripts/run.sh            # skip the QEMU step
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cargo build --release -p lenet-host
host=${CARGO_TARGET_DIR:-target}/release/host
out=${OUT:-runs/lenet5-sigmoid}

step() { printf '\n== %s\n' "$*"; }
step "train -> $out"
"$host" train --out "$out" "$@"
step "evaluate"
"$host" eval --model "$out"
step "classify four test images"
"$host" predict --model "$out" --index 0 --index 1 --index 2 --index 3
step "export int8 for the firmware"
"$host" export --model "$out" --int8 --out "$out/model.q8"
if [ "${FIRMWARE:-1}" != 0 ]; then
    step "classify the test set on the Cortex-M4 (QEMU)"
    LENET_MODEL="$out/model.q8" bash scripts/firmware.sh
fi
