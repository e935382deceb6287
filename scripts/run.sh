#!/usr/bin/env bash
# The main job, end to end on one machine:
#   set up -> train LeNet-5 on Fashion-MNIST (the `host train` defaults)
#   -> evaluate -> classify test images -> export int8 -> classify the whole
#   test set on the Cortex-M4 firmware in QEMU.
#
#   scripts/run.sh                       # default recipe into runs/lenet5-sigmoid
#   scripts/run.sh --epochs 5            # extra flags go to `host train`
#   OUT=runs/mine scripts/run.sh ...     # another output directory
#   FIRMWARE=0 scripts/run.sh            # skip the QEMU steps
#   LEARN=0 scripts/run.sh               # skip learning on the device
#
# The last step ships a model that never saw Sandal and Bag (the same
# recipe without those classes, into runs/shipped) and teaches it them on
# the Cortex-M4 (scripts/learn.sh), then evaluates the learned head here.
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
if [ "${FIRMWARE:-1}" != 0 ] && [ "${LEARN:-1}" != 0 ]; then
    step "ship a model without Sandal and Bag -> runs/shipped"
    "$host" train --threads 2 --exclude-classes 5,8 --out runs/shipped
    "$host" export --model runs/shipped --int8 --exclude-classes 5,8 --out runs/shipped/model.q8
    step "learn Sandal and Bag on the Cortex-M4 (QEMU)"
    LENET_MODEL=runs/shipped/model.q8 OUT=runs/shipped/head.bin bash scripts/learn.sh
    step "the shipped model with the head the device learned"
    "$host" eval --model runs/shipped --int8 --q8 runs/shipped/model.q8 --head runs/shipped/head.bin
fi
