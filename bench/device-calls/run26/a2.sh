#!/usr/bin/env bash
# Session 22, call 2: `quambac-a2` = a1 with the input RMS norm of W4A16's one-row in_proj run by
# the GEMV's blocks (`quamba::norm_half_permuted`). Checks against the CPU reference: the four
# shared models' W4A16 artifacts (compiled here with GPTQ, carried in .device/arts), the embedded
# tiny model (W4A16, W4A8), 2-layer real shapes; then 16-layer (8B: 8-layer) W4A16 TPOT, a1 and
# a2 side by side, two rounds; then a2's decode-step timeline for 16-layer mamba2-2.7b W4A16.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-a1.xz q2=quambac-a2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a16 build_short /tmp/q2 mamba2-2.7b:16:m27h mamba-2.8b:16:m28h mamba2-8b:8:m8h mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c
/tmp/q2 compile --target h100-w4a16 -o $W/tiny16.qmb >/dev/null 2>&1
/tmp/q2 compile --target h100-w4a8 -o $W/tiny8.qmb >/dev/null 2>&1
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in .device/arts/*.qmb; do /tmp/q2 cuda check "$a" --json 2>&1 | tail -1 >> $OUT/r/check-shared.jsonl; echo "$(basename $a): $(tail -1 $OUT/r/check-shared.jsonl | summary)"; done
  for shape in "1 1" "2 64"; do read -r b s <<< "$shape"
    echo "tiny w4a16 ${b}x$s: $(/tmp/q2 cuda check $W/tiny16.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"
    echo "tiny w4a8 ${b}x$s: $(/tmp/q2 cuda check $W/tiny8.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"; done
  for m in m27c m28c m8c; do echo "$m w4a16 1x1 steps 4: $(timeout 90 /tmp/q2 cuda check $W/$m.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"; done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| W4A16 one-row products | m27 16L TPOT b=1 / 16 ms | m28 16L | m8 8L |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  for bin in q1 q2; do
    echo "| $bin (round $round) | $(tpot /tmp/$bin $W/m27h.qmb) | $(tpot /tmp/$bin $W/m28h.qmb) | $(tpot /tmp/$bin $W/m8h.qmb) |" | tee -a $OUT/r/side.md
  done
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
timeout 100 /tmp/q2 cuda trace $W/m27h.qmb --steps 4 --svg $OUT/r/trace-m27-16L-w4a16.svg > $OUT/r/trace-m27-16L-w4a16.md 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
