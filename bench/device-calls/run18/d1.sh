#!/usr/bin/env bash
# Session 14, call 1: out_proj runs the split row chain before it (`quamba::gemv_chain`, qn)
# against the session-start binary (qb, c5: the code of 8555d1c). Checks against the integer
# reference (2-layer real shapes at 1 row and 4 x 8 rows, the trained models), TPOT side by side
# on 16-layer mamba2-2.7b and mamba-2.8b W4A8 (two rounds), tiles per cluster 2 / 4 / 8, a trace.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-d1.xz qb=quambac-c5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c
echo "built at $(elapsed) s"
( for a in $W/m27c.qmb $W/m28c.qmb .device/art/*.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  for a in $W/m27c.qmb $W/m28c.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 4x8 steps 2: $(timeout 90 /tmp/$b cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  echo "== check qn m27c 1x1 steps 4 tiles 8: $(QUAMBA_CUDA_CHAIN_IN_PRODUCT=8 timeout 90 /tmp/qn cuda check $W/m27c.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| round | model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m27 m28; do for b in qb qn; do
  [ $(elapsed) -lt 400 ] || break
  echo "| $r | $m | $b | $(tpot /tmp/$b $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done; done
for t in 2 8; do
  [ $(elapsed) -lt 430 ] || break
  echo "| tiles $t | m27 | qn | $(tpot /tmp/qn $W/m27.qmb QUAMBA_CUDA_CHAIN_IN_PRODUCT=$t) |" | tee -a $OUT/r/side.md
done
[ $(elapsed) -lt 470 ] && timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
[ $(elapsed) -lt 500 ] && timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
