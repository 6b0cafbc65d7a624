#!/usr/bin/env bash
# Session 22, call 3: W4A16's out_proj input chain split over blocks (a3: the split Hadamard
# chains storing f32, `ChainOutput::Stored`) and, on top, `HalfDot` unpacking with fewer
# instructions and two product chains (a4, which also compiles the source on the device when an
# artifact's PTX is newer than the driver). Checks of a4 against the CPU reference: the four
# shared models' W4A16 artifacts (compiled here without PTX, carried in .device/arts), an
# artifact with PTX from NVRTC 13.5 (the fallback), the embedded tiny model, 2-layer real shapes;
# then 16-layer (8B: 8-layer) W4A16 TPOT of a2, a3, a4 side by side, two rounds.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q2=quambac-a2.xz q3=quambac-a3.xz q4=quambac-a4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a16 build_short /tmp/q4 mamba2-2.7b:16:m27h mamba-2.8b:16:m28h mamba2-8b:8:m8h mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c
/tmp/q4 compile --target h100-w4a16 -o $W/tiny16.qmb >/dev/null 2>&1
/tmp/q4 compile --target h100-w4a8 -o $W/tiny8.qmb >/dev/null 2>&1
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in .device/arts/*.qmb .device/arts-ptx/*.qmb; do /tmp/q4 cuda check "$a" --json 2>&1 | tail -1 >> $OUT/r/check-shared.jsonl; echo "$(basename $a): $(tail -1 $OUT/r/check-shared.jsonl | summary)"; done
  for shape in "1 1" "2 64"; do read -r b s <<< "$shape"
    echo "tiny w4a16 ${b}x$s: $(/tmp/q4 cuda check $W/tiny16.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"
    echo "tiny w4a8 ${b}x$s: $(/tmp/q4 cuda check $W/tiny8.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"; done
  for m in m27c m28c m8c; do for shape in "1 1" "2 64"; do read -r b s <<< "$shape"
    echo "$m w4a16 ${b}x$s steps 4: $(timeout 90 /tmp/q4 cuda check $W/$m.qmb --batch $b --seq $s --steps 4 --json 2>&1 | tail -1 | summary)"; done; done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| W4A16 | m27 16L TPOT b=1 / 16 ms | m28 16L | m8 8L |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  for bin in q2 q3 q4; do
    echo "| $bin (round $round) | $(tpot /tmp/$bin $W/m27h.qmb) | $(tpot /tmp/$bin $W/m28h.qmb) | $(tpot /tmp/$bin $W/m8h.qmb) |" | tee -a $OUT/r/side.md
  done
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
