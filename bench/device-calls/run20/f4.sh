#!/usr/bin/env bash
# Session 16, call 4: qn (f3, the final code) also tells ptxas the blocks per SM of every
# streamed product, conv or not: mamba2-2.7b W8A8's streamed head spilled 16 bytes at ptxas's own
# choice (40 registers) and takes 64 at two blocks. W8A8 checks, and 16-layer mamba2-2.7b and
# mamba-2.8b W8A8 TPOT side by side with the fifteenth session's final binary (qb, e4), two
# rounds; the trained artifacts checked once more.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-f3.xz qb=quambac-e4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w8a8 build_short /tmp/qn mamba2-2.7b:2:m27c8 mamba-2.8b:2:m28c8 mamba2-2.7b:16:m278 mamba-2.8b:16:m288
echo "short built at $(elapsed) s"
( for a in $W/m27c8.qmb $W/m28c8.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1)"
  done
  for a in $W/m27c8.qmb $W/m28c8.qmb; do
    echo "== check qn $(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1)"
  done
) 2>&1 | tee $OUT/r/checks.txt | python3 -c '
import json, sys
for line in sys.stdin:
    head, _, js = line.partition(": {")
    try: r = json.loads("{" + js)
    except ValueError: print(line.strip()[:200]); continue
    print(head, "passed", r["passed"], "relative %.3g" % r["relative"], "greedy %d/%d" % (r["greedy_matching_prefix"], r["greedy_tokens"]))' 
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m278 m288; do for b in qb qn; do
  echo "| $m | $b | $(tpot /tmp/$b $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done; done
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
