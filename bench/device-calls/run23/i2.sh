#!/usr/bin/env bash
# Session 19, call 2: in_proj's norm prologue with a third of its instructions (`quambac-i2`):
# the quantize multiplies by the scale's inverse (`quantize_with_inverse`, the division only
# near a half-integer, so the bytes are `quantize_one`'s), no bounds checks where K is a multiple
# of the row kernel's threads, one stage address per thread plus constants. Checks against the
# CPU integer reference (trained artifacts, 2-layer real shapes), 16-layer TPOT side by side with
# the session-start binary (`quambac-h4`), a trace, then full-size mamba2-2.7b W4A8 and our FP16.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qo=quambac-h4.xz qn=quambac-i2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
( /tmp/qn synth --like mamba2-2.7b -o $W/mamba2-2.7b >/dev/null &&
  timeout 330 /tmp/qn compile $W/mamba2-2.7b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba2-2.7b-w4a8.qmb > $OUT/r/compile-full.log 2>&1; echo "full size built at $(elapsed) s" >> $OUT/r/times.txt ) &
FULL=$!
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    for b in qo qn; do
      echo "$b $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
    done
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| binary | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
row() { local name=$1 bin=$2; shift 2; echo "| $name | $(tpot $bin $W/m27.qmb "$@") | $(tpot $bin $W/m28.qmb "$@") |" | tee -a $OUT/r/side.md; }
for round in 1 2; do
  row "session start (h4), round $round" /tmp/qo
  row "prologue without divisions (i2), round $round" /tmp/qn
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
/tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-i2.md 2>&1
wait $FULL
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 430 ] && timeout 80 /tmp/qn cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "w4a8 at $(elapsed) s" | tee -a $OUT/r/times.txt
[ $(elapsed) -lt 500 ] && timeout 90 /tmp/qn cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
# results stay as files under $OUT/r (they come back even if the call runs out of time)
