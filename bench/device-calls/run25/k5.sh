#!/usr/bin/env bash
# Session 21, call 7: `quambac-k1` = k0 with W4A16's one-row decode products at one chunk in
# flight per warp (up to 20 warps): checks of W4A16 artifacts against the CPU reference (the
# embedded tiny model at 1 x 1 and 2 x 64 rows, 2-layer mamba2-2.7b and mamba-2.8b shapes at
# 1 x 1 with 4 greedy steps), then 16-layer W4A16 TPOT, k0 and k1 side by side.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-k0.xz q1=quambac-k1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a16 build_short /tmp/q1 mamba2-2.7b:16:m27h mamba-2.8b:16:m28h mamba2-2.7b:2:m27c mamba-2.8b:2:m28c
/tmp/q1 compile --target h100-w4a16 -o $W/tiny.qmb >/dev/null 2>&1
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for shape in "1 1" "2 64"; do read -r b s <<< "$shape"; echo "k1 tiny w4a16 ${b}x$s: $(/tmp/q1 cuda check $W/tiny.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"; done
  for m in m27c m28c; do echo "k1 $m w4a16 1x1 steps 4: $(timeout 90 /tmp/q1 cuda check $W/$m.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"; done ) | tee $OUT/r/checks.txt
echo "| binary | m27 16L W4A16 TPOT b=1 / 16 ms | m28 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for bin in q0 q1; do
  echo "| $bin | $(tpot /tmp/$bin $W/m27h.qmb) | $(tpot /tmp/$bin $W/m28h.qmb) |" | tee -a $OUT/r/side.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
