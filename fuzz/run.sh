#!/usr/bin/env bash
# Fuzzes quamba's loaders of untrusted files for a bounded time: each target (the restricted
# unpickler, the pytorch_model.bin reader, the safetensors + config.json loader, the .qmb
# artifact reader) runs for
# SECONDS_PER_TARGET seconds (default 60), starting from the small real files in seeds/<target>/
# plus whatever earlier runs kept in corpus/<target>/.
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # 10 min per target
#   fuzz/run.sh 30 pickle  # one target
#
# A crash leaves its input in fuzz/artifacts/<target>/ and makes this script exit 1. Make it a
# regression test: copy the file to fuzz/regressions/<target>/ (compiler/tests/fuzz_regressions.rs
# replays every file there), then fix the bug.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler for libFuzzer. cargo-fuzz
# passes nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"

seconds_per_target=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(pickle torch_zip checkpoint artifact)

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
# No sanitizer: the crates fuzzed forbid unsafe code, so the bugs to find are panics (with
# debug assertions, integer overflow included), aborts, hangs and runaway allocations.
flags=(--release --debug-assertions --sanitizer none)

cargo fuzz build "${flags[@]}"
mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${seconds_per_target}s"
    if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds_per_target" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        grep -E '^Done|stat::number_of_executed_units|stat::peak_rss_mb' "logs/$t.log" || true
    else
        failed+=("$t")
        grep -E 'panicked|ERROR|Test unit written|SUMMARY' "logs/$t.log" | head -n 10 || true
    fi
    rm -rf "${TMPDIR:-/tmp}"/quamba-fuzz-*
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/logs/)" >&2
    exit 1
fi
echo "no crashes"
