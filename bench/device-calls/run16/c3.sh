#!/usr/bin/env bash
# Session 12, call 3: with the input norm inside in_proj, in_proj's weights start streaming only
# when out_proj's blocks leave the SMs (the trace of c2). A larger shared-memory carveout lets its
# blocks be resident beside out_proj's: TPOT of the new binary at the computed carveout (62 %),
# 80 % and 100 %, 16-layer mamba2-2.7b / mamba-2.8b W4A8 (two rounds), 8-layer mamba2-8b (one).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/r
W=/tmp/w; mkdir -p $W
for s in mamba2-2.7b:16:m27 mamba-2.8b:16:m28 mamba2-8b:8:m8; do
  IFS=: read -r like l n <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null &&
    timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
echo "| round | model | carveout | TPOT ms (batch 1 / 16) |" > $OUT/r/carveout.md; echo "|---|---|---|---|" >> $OUT/r/carveout.md
for r in 1 2; do for m in m27 m28 m8; do for c in - 80 100; do
  [ "$m" = m8 ] && [ $r = 2 ] && continue
  [ $(( $(date +%s) - T0 )) -lt 300 ] || break
  if [ "$c" = - ]; then e=(); else e=(QUAMBA_CUDA_CARVEOUT=$c); fi
  echo "| $r | $m | $c | $(env "${e[@]}" timeout 40 /tmp/qn cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); t=j["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)), "| carveout", j.get("shared_carveout_percent"))') |" | tee -a $OUT/r/carveout.md
done; done; done
[ $(( $(date +%s) - T0 )) -lt 330 ] && QUAMBA_CUDA_CARVEOUT=100 timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-c100.md 2>&1
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
