#!/bin/sh
# The lenet GPU bundle: proves and measures the CUDA trainer on a machine
# that has only the NVIDIA driver and a POSIX shell (no Rust, no network;
# python3 with PyTorch only for the PyTorch baseline, skipped without it).
# Every file is found relative to this script; every step runs under
# `timeout`, within LENET_BUNDLE_SECONDS in all (default 290).
#
#   sh run.sh                       # on the GPU; OUT=dir also writes $OUT/gpu-report.md
#   LENET_BUNDLE_DEVICE=cuda-emu LENET_BUNDLE_SIZES=tiny sh run.sh   # the rehearsal
#
# Steps: 1 device, driver, compute capability, PTX JIT time; 2 the golden
# checks, every network one at a time; 3 compute-sanitizer (memcheck,
# racecheck, initcheck, synccheck) on the first steps of every network;
# 4 time per kernel of one training step; 5 images/s and epoch time of
# every network; 6 a 3-epoch LeNet-5 run beside the CPU trainer's;
# 7 PyTorch on the same device, the same networks, side by side.
# Exit status: 0 when every check passed (1, 2, 3, 6), 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
dev=${LENET_BUNDLE_DEVICE:-cuda}
sizes=${LENET_BUNDLE_SIZES:-full}
budget=${LENET_BUNDLE_SECONDS:-290}
host="$here/host"
export LENET_GOLDEN="$here/golden"
export FASHION_MNIST_DIR="$here/data"
work=$(mktemp -d "${TMPDIR:-/tmp}/lenet-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
report="$work/gpu-report.md"
start=$(date +%s)
failed=0
: >"$work/summary"

now() { echo $(($(date +%s) - start)); }

# step NAME CAP PROOF CMD...: runs CMD under a timeout of at most CAP
# seconds (less when the budget is nearly spent), logs it, and adds a row
# to the summary; PROOF=1 makes a failure fail the bundle.
logname() { echo "$work/log.$(echo "$1" | tr -c 'a-zA-Z0-9\n' '_')"; }
step() {
    s_name=$1 s_cap=$2 s_proof=$3
    shift 3
    left=$((budget - $(now)))
    t=$s_cap
    [ "$left" -lt "$t" ] && t=$left
    log=$(logname "$s_name")
    printf '\n== %s\n' "$s_name"
    if [ "$t" -lt 3 ]; then
        echo "skipped: the time budget of ${budget} s is spent" | tee "$log"
        result="skipped (time budget)"
    else
        t0=$(date +%s)
        timeout "$t" "$@" >"$log" 2>&1
        rc=$?
        cat "$log"
        dt=$(($(date +%s) - t0))
        case $rc in
        0) result="ok (${dt} s)" ;;
        124) result="TIMEOUT after ${t} s" ;;
        *) result="FAILED, exit ${rc} (${dt} s)" ;;
        esac
        [ "$rc" -ne 0 ] && [ "$s_proof" = 1 ] && failed=1
    fi
    printf '| %s | %s |\n' "$s_name" "$result" >>"$work/summary"
    {
        printf '\n### %s: %s\n\n```\n' "$s_name" "$result"
        tail -n 80 "$log"
        printf '```\n'
    } >>"$work/body"
}

# The networks: name, host flags, bench batch, epoch images. The tiny
# sizes (the rehearsal on the emulated device) leave out the full-width
# CNN: one of its training steps takes seconds there.
if [ "$sizes" = tiny ]; then
    nets="lenet5|--model lenet5|16|64
lenet5-max|--model lenet5-max|16|64
lenet5-wide|--model lenet5-wide|8|32
vgg|--model vgg --blocks 2 --width-div 16 --input-size 32 --hidden 32|4|8
alexnet|--model alexnet --width-div 16 --input-size 65 --hidden 32|4|8"
    seconds=0.05 epochs=1 limit="--limit-train 512 --limit-test 256" quick=--one-step
else
    nets="lenet5|--model lenet5|256|60000
lenet5-max|--model lenet5-max|256|60000
lenet5-wide|--model lenet5-wide|256|60000
cnn|--model cnn|256|60000
vgg-11/4 224x224|--model vgg --width-div 4|64|1280
alexnet 224x224|--model alexnet|64|1280
vgg-11 224x224|--model vgg|32|320"
    seconds=1 epochs=3 limit="" quick=""
fi

step "device" 30 1 sh -c '
    "$1" info
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv
    else
        echo "nvidia-smi: not on PATH"
    fi' sh "$host"

# shellcheck disable=SC2086 # $quick is one flag or none
step "golden checks ($dev)" 90 1 "$host" check --device "$dev" $quick

if command -v compute-sanitizer >/dev/null 2>&1 && [ "$dev" = cuda ]; then
    for tool in memcheck racecheck initcheck synccheck; do
        step "compute-sanitizer $tool" 45 1 compute-sanitizer --tool "$tool" --error-exitcode 9 \
            "$host" check --device cuda --one-step
    done
else
    printf '| compute-sanitizer | skipped: %s |\n' \
        "$([ "$dev" = cuda ] && echo "not on PATH" || echo "device $dev")" >>"$work/summary"
fi

if "$host" bench --help 2>/dev/null | grep -q -- '--profile'; then
    echo "$nets" | while IFS='|' read -r name flags batch images; do
        # shellcheck disable=SC2086 # the flags are words
        step "kernel times: $name" 30 0 "$host" bench --device "$dev" $flags --batch "$batch" \
            --seconds "$seconds" --epoch-images "$batch" --profile
    done
else
    printf '| kernel times | skipped: this build of host has no profiling mode |\n' >>"$work/summary"
fi

: >"$work/nets.tsv"
i=0
echo "$nets" | {
    while IFS='|' read -r name flags batch images; do
        i=$((i + 1))
        # shellcheck disable=SC2086
        step "bench: $name" 40 0 "$host" bench --device "$dev" $flags --batch "$batch" \
            --seconds "$seconds" --epoch-images "$images"
        # shellcheck disable=SC2086
        "$host" models $flags --pytorch >"$work/net$i.py" 2>/dev/null &&
            cp "$log" "$work/bench$i.txt" &&
            printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$batch" "$images" "$work/net$i.py" \
                "$work/bench$i.txt" >>"$work/nets.tsv"
    done
    # (the pipeline's subshell: hand the state back through files)
    echo "$failed" >"$work/failed"
}
failed=$(cat "$work/failed")

# shellcheck disable=SC2086
step "train $epochs epochs ($dev)" 60 1 "$host" train --device "$dev" --epochs "$epochs" $limit \
    --out "$work/train-$dev"
# shellcheck disable=SC2086
step "train $epochs epochs (cpu)" 90 1 "$host" train --device cpu --epochs "$epochs" $limit \
    --out "$work/train-cpu"
for d in "$dev" cpu; do
    acc=$(grep -ho 'test accuracy [0-9.]*%' "$(logname "train $epochs epochs ($d)")" 2>/dev/null | tail -n 1)
    printf '| accuracy after the run (%s) | %s |\n' "$d" "${acc:-not reached}" >>"$work/summary"
done

py=$(command -v python3 || true)
if [ -n "$py" ]; then
    pdev=cuda
    [ "$dev" = cuda ] || pdev=cpu
    left=$((budget - $(now) - 5))
    step "PyTorch on the same device" $((left > 0 ? left : 0)) 0 \
        "$py" "$here/pytorch_bench.py" --device "$pdev" --nets "$work/nets.tsv" --budget $((left - 10))
else
    printf '| PyTorch baseline | skipped: no python3 |\n' >>"$work/summary"
fi

{
    echo "# lenet GPU bundle report"
    echo
    echo "device $dev, sizes $sizes, $(date -u '+%Y-%m-%d %H:%M UTC'), $(now) s of a ${budget} s budget"
    echo
    echo "| step | result |"
    echo "|---|---|"
    cat "$work/summary"
    cat "$work/body"
} >"$report"
printf '\n== summary (%s s)\n' "$(now)"
cat "$work/summary"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$report" "$OUT/gpu-report.md" && echo "report: $OUT/gpu-report.md"
fi
exit "$failed"
