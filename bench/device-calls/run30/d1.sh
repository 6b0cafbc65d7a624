#!/usr/bin/env bash
# Session 26, call 1: mamba2-8b at full size, FP16 (ours) and W4A8, binary `quambac-d1` = 23e0e2b
# (the first full-size 8B run since the twelfth session; prefill has been rewritten since).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-d1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
SKIP_PEER=1 CONFIGS="w4a8" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$OUT/r WORK=$W/work timeout 555 bash bench/gpu.sh /tmp/q1 mamba2-8b 2>&1 | tail -n 30 | tee $OUT/r/gpu.txt
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
