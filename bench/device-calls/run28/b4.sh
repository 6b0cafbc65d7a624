#!/usr/bin/env bash
# Session 24, call 4: `quambac-b7` (as call 3, the committed code) at full size on mamba-2.8b:
# `bench/gpu.sh` with our FP16, W4A8 and W4A16 (no peer; device time).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q7=quambac-b7.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
mkdir -p $OUT/r/m28
SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$OUT/r/m28 WORK=$W/work timeout 380 bash bench/gpu.sh /tmp/q7 mamba-2.8b > $OUT/r/m28/log.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
