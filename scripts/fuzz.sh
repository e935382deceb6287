#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for a fixed number of executions and
# prints a table: target, executions, crashes, peak RSS.
#
#   bash scripts/fuzz.sh [RUNS [TARGET...]]   # default: 1000000 executions, every target
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh     # ... or stop each target after 300 s
#
# Needs the nightly toolchain and cargo-fuzz; installs both when missing.
# Seed corpora are generated (lenet_host::untrusted::seeds) into
# fuzz/corpus/<target>/ before the first run; what libFuzzer adds stays
# there for the next run. Crashing inputs land in fuzz/artifacts/<target>/;
# each one found must become a regression test (host/tests/fuzz_smoke.rs or
# the parser's unit tests). Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
targets=(idx_images idx_labels csv model q8 safetensors image head)
[ $# -gt 1 ] && targets=("${@:2}")

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds, written by the same generator the CI smoke test uses.
LENET_FUZZ_SEED_DIR="$PWD/fuzz/corpus" \
    cargo test -q -p lenet-host --test fuzz_smoke -- --ignored write_seed_corpora >/dev/null

export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
(cd fuzz && cargo +nightly fuzz build -O)
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
log=$(mktemp -d)
status=0
printf '| target | executions | crashes | peak RSS (MB) |\n|---|---:|---:|---:|\n'
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # Inputs up to 64 KiB; model, .q8 and safetensors files are 60-540 KB,
    # so their targets get room for whole files.
    case $t in model|q8|safetensors) max_len=1048576 ;; *) max_len=65536 ;; esac
    set +e
    # -rss_limit_mb: a run that needs more than 1 GB is a failure (an
    # unbounded allocation); -timeout: a single input over 10 s is a hang.
    "$bin/$t" "fuzz/corpus/$t" -runs="$runs" -rss_limit_mb=1024 -timeout=10 \
        ${FUZZ_SECONDS:+-max_total_time=$FUZZ_SECONDS} \
        -max_len="$max_len" -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
        >"$log/$t.txt" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log/$t.txt" | grep -o '[0-9]*$' || echo "?")
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log/$t.txt" | grep -o '[0-9]*$' || echo "?")
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "$t: libFuzzer exited $rc; log: $log/$t.txt" >&2
    fi
    printf '| %s | %s | %s | %s |\n' "$t" "$execs" "$crashes" "$rss"
done
exit $status
