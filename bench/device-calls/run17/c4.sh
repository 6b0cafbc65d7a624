#!/usr/bin/env bash
# Session 13, call 4: call 3 showed mamba-2.8b's prefill 7 % slower with the c3 binary (the
# prefill selective scan loaded its scales ahead: 72 -> 93 registers). That change is reverted
# and the decode step's scan (selective_step_dt) loads its inputs' scales before the wait
# instead (qn). Against the session-start binary (qb): checks (Mamba1 trained models, 2-layer
# mamba-2.8b), TTFT for a 1024-token prompt and TPOT at batch 1 / 16, 16-layer mamba-2.8b (two
# rounds) and mamba2-2.7b, W4A8.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-c5.xz > /tmp/qn && xz -dc .device/quambac-new.xz > /tmp/qb && chmod +x /tmp/qn /tmp/qb
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba-2.8b:2:m28c; do
  IFS=: read -r like l n <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null &&
    timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
( for a in .device/art/mamba1-small-w4a8.qmb .device/art/mamba1-tiny-ss-w4a8.qmb $W/m28c.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done
  echo "== check qn mamba1-small-w4a8.qmb 4x8: $(timeout 90 /tmp/qn cuda check .device/art/mamba1-small-w4a8.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(( $(date +%s) - T0 )) s"
A="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
echo "| round | model | binary | TTFT ms | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|---|" >> $OUT/r/side.md
for job in 1:m28:qb 1:m28:qn 1:m27:qb 1:m27:qn 2:m28:qn 2:m28:qb; do
  IFS=: read -r r m b <<< "$job"
  [ $(( $(date +%s) - T0 )) -lt 400 ] || break
  echo "| $r | $m | $b | $(timeout 60 /tmp/$b cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); t=j["tpot_ms"]; print("%.2f | " % j["ttft_ms"] + " / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |" | tee -a $OUT/r/side.md
done
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
