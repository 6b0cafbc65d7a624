#!/usr/bin/env bash
# Session 25, call 3: `quambac-c2` (call 2's, the code committed this session) at full size:
# `bench/gpu.sh` on mamba-2.8b, then mamba2-2.7b, with our FP16, W4A8 and W4A16 (no peer; device
# time).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q2=quambac-c2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
for m in mamba-2.8b:m28 mamba2-2.7b:m27; do
  like=${m%%:*}; n=${m#*:}
  mkdir -p $OUT/r/$n
  SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
    OUT=$OUT/r/$n WORK=$W/work timeout 270 bash bench/gpu.sh /tmp/q2 $like > $OUT/r/$n/log.txt 2>&1
  rm -rf $W/work
  echo "$like at $(elapsed) s" | tee -a $OUT/r/times.txt
done
pack_results
