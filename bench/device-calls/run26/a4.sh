#!/usr/bin/env bash
# Session 22, call 4: full-size LIKE with `quambac-a4` (this session's W4A16 one-row products:
# GEMV with the input norm, split out_proj input chain, HalfDot): `bench/gpu.sh` for our FP16,
# W4A8 and W4A16 side by side (no peer). usage: LIKE=mamba2-2.7b bash bench/device-calls/run26/a4.sh
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q4=quambac-a4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$W/gpu WORK=$W/work bash bench/gpu.sh /tmp/q4 $LIKE 2>&1 | tail -12
cp $W/gpu/gpu.jsonl $OUT/r/gpu-$LIKE.jsonl
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
