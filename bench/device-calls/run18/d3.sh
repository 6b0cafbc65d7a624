#!/usr/bin/env bash
# Session 14, call 3: the one-row SSD step gates its output and sums its squares for the gated
# norm chain after it (qn; `QUAMBA_CUDA_GATE_IN_SSD=0` restores the chain doing it), against the
# session-start binary (qb, c5: the code of 8555d1c). Checks against the integer reference
# (2-layer real shapes at 1 row and 4 x 8 rows, the trained Mamba2 models), TPOT side by side on
# 16-layer mamba2-2.7b and 8-layer mamba2-8b W4A8 (two rounds), a trace of the 16-layer 2.7B.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-d3.xz qb=quambac-c5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:16:m27 mamba2-8b:8:m8 mamba2-2.7b:2:m27c
echo "built at $(elapsed) s"
( for a in $W/m27c.qmb .device/art/mamba2-*.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  echo "== check qn m27c 4x8 steps 2: $(timeout 90 /tmp/qn cuda check $W/m27c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
  echo "== check qn m27c 1x1 steps 4 knob off: $(QUAMBA_CUDA_GATE_IN_SSD=0 timeout 90 /tmp/qn cuda check $W/m27c.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| round | model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m27 m8; do
  [ $(elapsed) -lt 420 ] || break
  echo "| $r | $m | qb | $(tpot /tmp/qb $W/$m.qmb) |" | tee -a $OUT/r/side.md
  echo "| $r | $m | qn | $(tpot /tmp/qn $W/$m.qmb) |" | tee -a $OUT/r/side.md
  echo "| $r | $m | qn, GATE_IN_SSD=0 | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_GATE_IN_SSD=0) |" | tee -a $OUT/r/side.md
done; done
[ $(elapsed) -lt 480 ] && timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
