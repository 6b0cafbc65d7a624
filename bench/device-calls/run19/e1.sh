#!/usr/bin/env bash
# Session 15, call 1: one-row decode steps run the out_proj input chain after them in their own
# blocks (qn: Mamba2's SSD step in its last five blocks after a ticket counter, Mamba1's scan in
# the last block of each Hadamard block; `QUAMBA_CUDA_CHAIN_IN_STEP=0` restores the chain's own
# launch in the same binary). Checks against the integer reference (2-layer real shapes, the
# trained models), then 16-layer TPOT side by side with the fourteenth session's final binary
# (qb, d5) and the knob off, then traces.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-e1.xz qb=quambac-d5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s"
( for a in $W/m27c.qmb $W/m28c.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done
  for a in m27c m28c; do
    echo "== check qn $a 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $W/$a.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
    echo "== check qn $a 1x1 steps 4, CHAIN_IN_STEP=0: $(QUAMBA_CUDA_CHAIN_IN_STEP=0 timeout 60 /tmp/qn cuda check $W/$a.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
    echo "== check qb $a 1x1 steps 4: $(timeout 60 /tmp/qb cuda check $W/$a.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m27 m28; do
  [ $(elapsed) -lt 420 ] || break
  echo "| $m | qb | $(tpot /tmp/qb $W/$m.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qn, CHAIN_IN_STEP=0 | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_CHAIN_IN_STEP=0) |" | tee -a $OUT/r/side.md
  echo "| $m | qn | $(tpot /tmp/qn $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done
echo "timed at $(elapsed) s"
for m in m27 m28; do
  [ $(elapsed) -lt 500 ] && timeout 30 /tmp/qn cuda trace $W/$m.qmb --steps 4 > $OUT/r/trace-$m.md 2>&1
done
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
