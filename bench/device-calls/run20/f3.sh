#!/usr/bin/env bash
# Session 16, call 3: full-size mamba2-2.7b W4A8 and our FP16 with the final binary (qn, f2),
# side by side; a 16-layer mamba-2.8b trace while the full-size model compiles.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-f2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
( /tmp/qn synth --like mamba2-2.7b -o $W/mamba2-2.7b >/dev/null &&
  timeout 330 /tmp/qn compile $W/mamba2-2.7b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba2-2.7b-w4a8.qmb > $OUT/r/compile.log 2>&1 ) &
build_short /tmp/qn mamba-2.8b:16:m28
timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
wait
echo "full size built at $(elapsed) s"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 400 ] && timeout 100 /tmp/qn cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 470 ] && timeout 100 /tmp/qn cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
