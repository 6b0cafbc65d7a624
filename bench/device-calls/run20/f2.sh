#!/usr/bin/env bash
# Session 16, call 2: qn (f2) is f1 with the rule that call 1 measured: a one-row product that
# runs a conv's step asks ptxas for the blocks per SM its one-wave layout places
# (`__launch_bounds__(256, 3)` for the 2.7B/2.8B/8B in_proj). Checks; 16-layer mamba-2.8b and
# mamba2-2.7b and 8-layer mamba2-8b TPOT side by side with the fifteenth session's final binary
# (qb, e4) while full-size mamba-2.8b W4A8 compiles; then full-size mamba-2.8b W4A8 and FP16.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-f2.xz qb=quambac-e4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
( /tmp/qn synth --like mamba-2.8b -o $W/mamba-2.8b >/dev/null &&
  timeout 300 /tmp/qn compile $W/mamba-2.8b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba-2.8b-w4a8.qmb > $OUT/r/compile.log 2>&1 ) &
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba2-8b:8:m8
echo "short built at $(elapsed) s"
( for a in $W/m27c.qmb $W/m28c.qmb $W/m8c.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-300)"
  done
  for a in $W/m27c.qmb $W/m28c.qmb $W/m8c.qmb; do
    echo "== check qn $(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-300)"
  done
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m28 m27 m8; do for b in qb qn; do
  echo "| $m | $b | $(tpot /tmp/$b $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done; done
echo "tpot at $(elapsed) s"
wait
echo "full size built at $(elapsed) s"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 420 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b-w4a8.qmb --label "mamba-2.8b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 480 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b --label "mamba-2.8b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
