#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports what each did.
#
#   fuzz/run.sh                 # each target for 60 s
#   FUZZ_SECONDS=300 fuzz/run.sh jwt
#
# Needs cargo-fuzz (installed here if missing) and a nightly rustc. Without a
# nightly toolchain, stable rustc is told to accept the -Z flags that
# cargo-fuzz passes (RUSTC_BOOTSTRAP=1). FUZZ_TOOLCHAIN=stable forces that.
# A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 after the remaining targets ran; logs are in fuzz/logs/.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(stop_body jwt)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" != "stable" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    echo "toolchain: nightly ($(rustc +nightly --version))"
else
    export RUSTC_BOOTSTRAP=1
    echo "toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly installed)"
fi

mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="fuzz/logs/$target.log"
    echo "== $target: ${seconds} s (log: $log)"
    status=0
    # -a: debug assertions and overflow checks on, so that an overflow is a crash.
    cargo "${toolchain[@]}" fuzz run -a "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -dict="fuzz/dict/$target.dict" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        echo "   ok: ${runs:-?} executions in ${seconds} s, ${cov:-cov ?}, corpus $corpus files"
    else
        failed+=("$target")
        echo "   FAILED (exit $status) after ${runs:-?} executions; the last lines of $log:"
        tail -40 "$log" | sed 's/^/   | /'
        ls "fuzz/artifacts/$target" 2>/dev/null | sed 's/^/   artifact: /' || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}"
    exit 1
fi
echo "fuzz: no crash in ${targets[*]}"
