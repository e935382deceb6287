#!/usr/bin/env bash
# Rehearses the GPU bundle where there is no GPU: runs its run.sh on the
# emulated device with tiny sizes, in a new network namespace, with no
# cargo or rustc on PATH and an empty HOME, so the bundle is shown to need
# nothing outside itself; then checks the report.
#
#   bash scripts/gpu-bundle.sh && bash scripts/gpu-rehearse.sh [BUNDLE]
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=$(cd "${1:-target/gpu-bundle}" && pwd)
home=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$home" "$out"' EXIT
path=/usr/bin:/bin
for tool in cargo rustc rustup; do
    if PATH=$path command -v "$tool" >/dev/null; then
        echo "gpu-rehearse: $tool is on $path; the rehearsal would not prove the bundle needs no toolchain" >&2
        exit 1
    fi
done
# A new network namespace (only a loopback, down): as root directly,
# otherwise inside a user namespace.
netns="unshare --net --"
$netns true 2>/dev/null || netns="unshare --user --map-root-user --net --"
$netns true || { echo "gpu-rehearse: cannot create a network namespace" >&2; exit 1; }
start=$(date +%s)
rc=0
$netns env -i PATH=$path HOME="$home" OUT="$out" \
    LENET_BUNDLE_DEVICE=cuda-emu LENET_BUNDLE_SIZES=tiny LENET_BUNDLE_SECONDS=150 \
    sh "$bundle/run.sh" >"$out/run.log" 2>&1 || rc=$?
secs=$(($(date +%s) - start))
report="$out/gpu-report.md"
fail() {
    tail -n 40 "$out/run.log" >&2
    echo "gpu-rehearse: $*" >&2
    exit 1
}
[ "$rc" -eq 0 ] || fail "run.sh exited $rc after $secs s"
[ -f "$report" ] || fail "no report at \$OUT/gpu-report.md"
grep -q '^| golden checks (cuda-emu) | ok' "$report" || fail "the golden checks did not pass"
grep -Eq '^all [0-9]+ checks passed' "$report" || fail "the report lacks the golden checks' closing line"
for group in lenet/classic nets/cnn conv2d/lenet_c1 max_pool2d/w3_s2_overlap linear/i84_o10 upsample/nonsquare; do
    grep -q "^ok    $group " "$report" || fail "the report lacks the check of $group"
done
grep -q '^| train 1 epochs (cuda-emu) | ok' "$report" || fail "the training run did not pass"
grep -q 'TIMEOUT\|FAILED' "$report" && fail "a step timed out or failed"
echo "gpu-rehearse: run.sh passed offline on the emulated device in $secs s, $(du -sb "$bundle" |
    awk '{ printf "%.1f MiB", $1 / 1048576 }') bundle"
