#!/usr/bin/env bash
# Session 23, call 4: `quambac-b3` = the committed code (b2 + 32-row f16 product warps and the
# Mamba1 prefill scan at 32 channels x 4 lanes). Checks at 2 x 64 rows (the shared mamba1-small
# with the new scan shape; the tiny model's W4A8 bit for bit), then `bench/gpu.sh` at full size: mamba2-2.7b with our
# FP16, W4A8 and W4A16, then mamba-2.8b with FP16 and W4A8 (no peer; device time). Lines are
# written straight under $OUT so that a call cut by its time limit keeps what ran.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q3=quambac-b3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/card.txt
/tmp/q3 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1
( for a in tiny-w4a8:$W/tiny-w4a8.qmb shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64: $(timeout 90 /tmp/q3 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/times.txt
mkdir -p $OUT/m27 $OUT/m28
SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$OUT/m27 WORK=$W/work bash bench/gpu.sh /tmp/q3 mamba2-2.7b > $OUT/m27/log.txt 2>&1
echo "mamba2-2.7b at $(elapsed) s" | tee -a $OUT/times.txt
SKIP_PEER=1 CONFIGS="w4a8" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$OUT/m28 WORK=$W/work bash bench/gpu.sh /tmp/q3 mamba-2.8b > $OUT/m28/log.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/times.txt
