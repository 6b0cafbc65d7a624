#!/usr/bin/env bash
# Session 12, call 2: the layer's input RMS norm -> quantize run by in_proj's bulk GEMV (qn)
# against the session-start binary (qb, e1f60df). Checks against the integer reference (tiny and
# small trained models, 2-layer real shapes, both binaries), TPOT side by side (16-layer
# mamba2-2.7b and mamba-2.8b W4A8, 8-layer mamba2-8b W4A8: its in_proj streams, so its plan is
# unchanged), the new plan's trace, and the SM clock while a bench runs.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && xz -dc .device/quambac-base.xz > /tmp/qb && chmod +x /tmp/qn /tmp/qb
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba2-8b:8:m8 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c; do
  IFS=: read -r like l n <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null &&
    timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
( for a in .device/art/*.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 1x1: $(timeout 60 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
  done; done
  for a in $W/m27c.qmb $W/m28c.qmb; do for b in qn qb; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
  done; done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
( while sleep 2; do nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw --format=csv,noheader; done ) > $OUT/r/clocks.txt 2>&1 &
CLK=$!
echo "| round | model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m27 m28 m8; do for b in qb qn; do
  [ $(( $(date +%s) - T0 )) -lt 400 ] || break
  echo "| $r | $m | $b | $(timeout 40 /tmp/$b cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |" | tee -a $OUT/r/side.md
done; done; done
kill $CLK
[ $(( $(date +%s) - T0 )) -lt 440 ] && timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-new.md 2>&1
[ $(( $(date +%s) - T0 )) -lt 460 ] && timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28-new.md 2>&1
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
