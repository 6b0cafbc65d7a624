#!/usr/bin/env bash
# Session 13, call 2: constants before the dependency wait (the scans' input scales, the split
# row chains' norm weights and scales), the batched embedding lookup and the Mamba1 scan's unused
# steps, on top of call 1's cluster chain (qn), against call 1's binary (q1) and the session-start
# binary (qb, 2e7bf64: the code of 25787da). Checks against the integer reference, TPOT side by
# side (16-layer mamba2-2.7b and mamba-2.8b, 8-layer mamba2-8b, W4A8), traces of the new binary.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-c2.xz > /tmp/qn && xz -dc .device/quambac-c1.xz > /tmp/q1 && xz -dc .device/quambac-new.xz > /tmp/qb && chmod +x /tmp/qn /tmp/q1 /tmp/qb
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba2-8b:8:m8 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c; do
  IFS=: read -r like l n <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null &&
    timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
( for a in .device/art/*.qmb $W/m27c.qmb $W/m28c.qmb $W/m8c.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  for a in .device/art/mamba2-small-w4a8.qmb .device/art/mamba1-small-w4a8.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 4x8: $(timeout 90 /tmp/$b cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
echo "| round | model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m27 m28 m8; do for b in qb q1 qn; do
  [ $(( $(date +%s) - T0 )) -lt 440 ] || break
  [ $m = m8 ] && [ $b = q1 ] && continue
  echo "| $r | $m | $b | $(timeout 40 /tmp/$b cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |" | tee -a $OUT/r/side.md
done; done; done
[ $(( $(date +%s) - T0 )) -lt 470 ] && timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
[ $(( $(date +%s) - T0 )) -lt 490 ] && timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
