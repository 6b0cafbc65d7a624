#!/usr/bin/env bash
# Session 21, call 5: the whole issue-5 table again with one binary (`quambac-k0`, the
# session-start code; this session changed no W8A8, W4A8 or FP16 kernel): `bench/gpu.sh` on LIKE (our FP16, W8A8,
# W4A8, W4A16 and the transformers FP16 peer, side by side in one call), after the embedded
# tiny model's checks (checkpoint, and its three artifacts at 1 x 1 and 2 x 64 rows) when
# CHECKS=1. usage: LIKE=mamba2-2.7b CHECKS=1 bash bench/device-calls/run25/k3.sh
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-k0.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
if [ -n "${CHECKS:-}" ]; then
  /tmp/q0 cuda check --json 2>/dev/null | tail -1 | tee -a $OUT/r/check.jsonl
  for t in w8a8 w4a8 w4a16; do
    /tmp/q0 compile --target "h100-$t" -o $W/tiny-$t.qmb >/dev/null 2>&1 || echo "compile tiny $t failed"
    for shape in "1 1" "2 64"; do
      read -r batch seq <<< "$shape"
      /tmp/q0 cuda check $W/tiny-$t.qmb --batch $batch --seq $seq --json 2>/dev/null | tail -1 | tee -a $OUT/r/check.jsonl
    done
  done
  echo "checks done at $(elapsed) s" | tee -a $OUT/r/times.txt
fi
CONFIGS=${CONFIGS:-"w8a8 w4a8 w4a16"} BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$W/gpu WORK=$W/work bash bench/gpu.sh /tmp/q0 $LIKE 2>&1 | tail -12
cp $W/gpu/gpu.jsonl $OUT/r/gpu-$LIKE.jsonl
tail -n 3 $W/gpu/peer-*.log > $OUT/r/peer-$LIKE.txt 2>/dev/null
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
