#!/usr/bin/env bash
# Session 18, call 4: full-size mamba2-2.7b W4A8 with the final rule (in_proj sums two tiles per
# warp) and our FP16, side by side in one call. Results are written as they come (no tarball),
# since this call uses the last of the session's device time.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qf=quambac-h4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
/tmp/qf synth --like mamba2-2.7b -o $W/mamba2-2.7b >/dev/null &&
  timeout 330 /tmp/qf compile $W/mamba2-2.7b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba2-2.7b-w4a8.qmb > $OUT/r/compile.log 2>&1
echo "full size built at $(elapsed) s" | tee $OUT/r/times.txt
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 400 ] && timeout 90 /tmp/qf cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "w4a8 at $(elapsed) s" | tee -a $OUT/r/times.txt
[ $(elapsed) -lt 440 ] && timeout 90 /tmp/qf cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
