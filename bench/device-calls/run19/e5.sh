#!/usr/bin/env bash
# Session 15, call 5: the final binary (qn = quambac-e4.xz, the code of call 4) on the Mamba2
# side, whose kernels are those of commit 8dd1e5c (not run on a GPU in the fourteenth session):
# checks against the integer reference (2-layer mamba2-2.7b shapes at 1 x 1 and 4 x 8, every
# trained artifact), then 16-layer mamba2-2.7b TPOT side by side with the fourteenth session's
# final binary (qb, d5), two rounds.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-e4.xz qb=quambac-d5.xz
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba2-2.7b:16:m27
echo "built at $(elapsed) s"
( for a in $W/m27c.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
  done
  echo "== check qn m27c 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $W/m27c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-400)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for b in qb qn; do
  [ $(elapsed) -lt 200 ] || break
  echo "| m27 | $b | $(tpot /tmp/$b $W/m27.qmb) |" | tee -a $OUT/r/side.md
done; done
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
