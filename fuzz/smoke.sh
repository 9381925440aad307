#!/usr/bin/env bash
# Runs every fuzz target briefly, for CI: FUZZ_SECONDS each (default 20).
# The committed seeds are only read; what the fuzzer finds new goes to a
# temporary directory. Fails on the first crash, leak, timeout or broken
# invariant, leaving the input in fuzz/artifacts/<target>/.
#
# Needs a C++ compiler (libFuzzer is built from source) and cargo-fuzz;
# scripts/setup.sh installs them when missing. Only a stable toolchain is
# needed: RUSTC_BOOTSTRAP=1 lets it take the nightly flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
targets=(frame_reader json_command proto_command engineio_payload socketio_packet)
export RUSTC_BOOTSTRAP=1

../scripts/setup.sh fuzz

cargo fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    if ! cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "smoke: $t FAILED (input saved under fuzz/artifacts/$t/)"
        exit 1
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    echo "smoke: $t ok, ${runs:-?} runs in ${seconds}s, no findings"
done
