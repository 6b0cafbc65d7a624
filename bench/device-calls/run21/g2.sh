#!/usr/bin/env bash
# Session 17, call 2: int8 states with fewer registers (g2: the f32 path as before the change,
# 62 / 64 registers in the SSD step; int8 scales loaded after the wait and read again at the
# store, 76 / 80). Checks; 16-layer TPOT side by side (qb = f3, qs f32 states, qs int8 states);
# full-size mamba2-2.7b W4A8 with int8 states and our FP16 in the same call.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qs=quambac-g2.xz qb=quambac-f3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
( /tmp/qs synth --like mamba2-2.7b -o $W/mamba2-2.7b >/dev/null &&
  timeout 330 /tmp/qs compile $W/mamba2-2.7b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba2-2.7b-w4a8.qmb > $OUT/r/compile.log 2>&1 ) &
FULL=$!
build_short /tmp/qs mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 & P1=$!
COMPILE_FLAGS=--f32-states build_short /tmp/qs mamba2-2.7b:16:m27f mamba-2.8b:16:m28f & P2=$!
build_short /tmp/qb mamba2-2.7b:16:m27b mamba-2.8b:16:m28b & P3=$!
wait $P1 $P2 $P3
echo "short built at $(elapsed) s" | tee $OUT/r/times.txt
( for a in .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    echo "== check $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qs cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
    echo "== check $(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qs cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-400)"
  done ) 2>&1 | tee $OUT/r/checks.txt | grep -c '"passed":true'
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for m in m27 m28; do
  echo "| $m | qb (f3), f32 states | $(tpot /tmp/qb $W/${m}b.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qs, f32 states | $(tpot /tmp/qs $W/${m}f.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qs, int8 states | $(tpot /tmp/qs $W/$m.qmb) |" | tee -a $OUT/r/side.md
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
timeout 30 /tmp/qs cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
wait $FULL
echo "full size built at $(elapsed) s" | tee -a $OUT/r/times.txt
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 400 ] && timeout 100 /tmp/qs cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8 int8-states" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 470 ] && timeout 100 /tmp/qs cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
