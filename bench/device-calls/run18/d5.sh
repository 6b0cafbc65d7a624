#!/usr/bin/env bash
# Session 14, call 5: the final binary (qn: only the SSD step gates its output; Mamba1's gating,
# which lost in call 4, removed). Checks against the integer reference, then 16-layer TPOT side
# by side with the session-start binary (qb, c5), while the call's short budget lasts.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-d5.xz qb=quambac-c5.xz
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s"
( for a in $W/m27c.qmb $W/m28c.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-300)"
  done
  echo "== check qn m27c 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $W/m27c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-300)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for m in m27 m28; do for b in qb qn; do
  [ $(elapsed) -lt 200 ] || break
  echo "| $m | $b | $(tpot /tmp/$b $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
