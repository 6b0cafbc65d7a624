#!/usr/bin/env bash
# Session 12, call 4: (A) with in_proj's weights now on the critical path (they start streaming
# when out_proj's blocks leave), the tenth session's L2 prefetch, restricted to in_proj's weights
# (QUAMBA_CUDA_L2_PREFETCH=24 MiB, QUAMBA_CUDA_L2_PREFETCH_SKIP=1: the SSD step / scan asks for the
# next in_proj's weights, not out_proj's), after the scan's wait (mode 0) or at its end (mode 2),
# 16-layer mamba2-2.7b / mamba-2.8b W4A8, two rounds. (B) full-size W4A8 mamba2-8b, mamba2-2.7b,
# mamba-2.8b with this binary (qp; with the prefetch where it won (A) on both models by 1 %), and
# the session-start binary (qb) on the same artifacts where time allows.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-pf.xz > /tmp/qp && xz -dc .device/quambac-base.xz > /tmp/qb && chmod +x /tmp/qp /tmp/qb
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for like in mamba2-8b mamba2-2.7b mamba-2.8b; do
  ( /tmp/qp synth --like $like -o $W/$like >/dev/null &&
    timeout 280 /tmp/qp compile $W/$like --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/$like-w4a8.qmb > $OUT/r/compile-$like.log 2>&1 ) &
done
for s in mamba2-2.7b:16:m27 mamba-2.8b:16:m28; do
  IFS=: read -r like l n <<< "$s"
  /tmp/qp synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null
  timeout 150 /tmp/qp compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1
done
echo "16L built at $(( $(date +%s) - T0 )) s"
echo "== check m2t prefetch: $(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1 timeout 40 /tmp/qp cuda check .device/art/m2t-w4a8.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-300)" | tee $OUT/r/checks.txt
echo "== check m1t prefetch: $(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1 timeout 40 /tmp/qp cuda check .device/art/m1t-w4a8.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-300)" | tee -a $OUT/r/checks.txt
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
tp() { timeout 40 "$@" --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))'; }
echo "| round | model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/prefetch.md; echo "|---|---|---|---|" >> $OUT/r/prefetch.md
for r in 1 2; do for m in m27 m28; do for v in off pf0 pf2; do
  case $v in off) e=();; pf0) e=(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1);; pf2) e=(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1 QUAMBA_CUDA_L2_PREFETCH_MODE=2);; esac
  echo "| $r | $m | $v | $(env "${e[@]}" bash -c "$(declare -f tp); A='$A'; tp /tmp/qp cuda bench $W/$m.qmb") |" | tee -a $OUT/r/prefetch.md
done; done; done
echo "variants at $(( $(date +%s) - T0 )) s"
best=$(python3 - $OUT/r/prefetch.md <<'PY'
import sys, collections
t = collections.defaultdict(list)
for l in open(sys.argv[1]):
    p = [x.strip() for x in l.split("|")]
    if len(p) > 4 and p[1].isdigit() and p[4]:
        t[(p[2], p[3])].append(float(p[4].split("/")[0]))
mean = {k: sum(v) / len(v) for k, v in t.items() if v}
wins = [v for v in ("pf0", "pf2") if all((m, v) in mean and (m, "off") in mean and mean[(m, v)] < 0.99 * mean[(m, "off")] for m in ("m27", "m28"))]
print(min(wins, key=lambda v: mean[("m27", v)] + mean[("m28", v)]) if wins else "off")
PY
)
echo "full size with: $best" | tee $OUT/r/choice.txt
case $best in off) E=();; pf0) E=(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1);; pf2) E=(QUAMBA_CUDA_L2_PREFETCH=24 QUAMBA_CUDA_L2_PREFETCH_SKIP=1 QUAMBA_CUDA_L2_PREFETCH_MODE=2);; esac
wait
echo "full size compiled at $(( $(date +%s) - T0 )) s"; tail -n 2 $OUT/r/compile-*.log
ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
for job in mamba2-8b:qp mamba2-2.7b:qp mamba-2.8b:qp mamba-2.8b:qb mamba2-2.7b:qb; do
  IFS=: read -r like b <<< "$job"
  left=$(( 575 - ($(date +%s) - T0) ))
  [ $left -gt 45 ] || break
  if [ $b = qp ]; then label="$like w4a8"; env=("${E[@]}"); else label="$like w4a8-session-start"; env=(); fi
  env "${env[@]}" timeout $left /tmp/$b cuda bench $W/$like-w4a8.qmb --label "$label" --json $ARGS 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  echo "$job done at $(( $(date +%s) - T0 )) s"
done
python3 bench/gpu_report.py $OUT/r/full.jsonl | tail -8
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
