#!/usr/bin/env bash
# Session 26, call 5: `quambac-d5` (the committed tiled prefill product) at full size:
# `bench/gpu.sh` on mamba-2.8b, then mamba2-2.7b, with our FP16, W4A8 and W4A16 (no peer; device
# time). Each bench line lands in $OUT as it is printed (a call cut short by the session's device
# time keeps what finished).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q5=quambac-d5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv > $OUT/card.txt
for m in mamba-2.8b:m28 mamba2-2.7b:m27; do
  like=${m%%:*}; n=${m#*:}
  mkdir -p $W/o-$n && touch $OUT/full-$like.jsonl && ln -sf $OUT/full-$like.jsonl $W/o-$n/gpu.jsonl
  SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
    OUT=$W/o-$n WORK=$W/work timeout 250 bash bench/gpu.sh /tmp/q5 $like > $W/o-$n/log.txt 2>&1
  rm -rf $W/work
  echo "$like at $(elapsed) s" | tee -a $OUT/times.txt
done
rm -rf $OUT/r
