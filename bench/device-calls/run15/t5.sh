#!/usr/bin/env bash
# Session 11, call 5: the new stream and ring rules (qn) against the session-start binary (qo,
# fd4e9cf): checks at real shapes (2-layer mamba2-8b W4A8, 2-layer mamba2-2.7b W8A8: the plans
# that change), TPOT side by side (8-layer mamba2-8b W4A8, 16-layer mamba2-2.7b W8A8), a trace.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && xz -dc .device/quambac-prev.xz > /tmp/qo && chmod +x /tmp/qn /tmp/qo
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-8b:8:m8:w4a8 mamba2-8b:2:m8c:w4a8 mamba2-2.7b:16:m27w8:w8a8 mamba2-2.7b:2:m27w8c:w8a8; do
  IFS=: read -r like l n cfg <<< "$s"
  /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null
  timeout 150 /tmp/qn compile $W/$n --target h100-$cfg --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
( for a in $W/m8c.qmb $W/m27w8c.qmb; do for b in qn qo; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  for a in .device/art/*.qmb; do echo "== check qn $(basename $a) 1x1: $(timeout 40 /tmp/qn cuda check $a --batch 1 --seq 1 --json 2>&1 | tail -1 | cut -c1-300)"; done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
echo "| round | model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m8 m27w8; do for b in qo qn; do
  [ $(( $(date +%s) - T0 )) -lt 330 ] || break
  echo "| $r | $m | $b | $(timeout 30 /tmp/$b cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |" | tee -a $OUT/r/side.md
done; done; done
[ $(( $(date +%s) - T0 )) -lt 345 ] && timeout 20 /tmp/qn cuda trace $W/m8.qmb --steps 4 > $OUT/r/trace-m8-new.md 2>&1
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
