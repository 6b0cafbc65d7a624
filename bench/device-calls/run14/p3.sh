#!/usr/bin/env bash
# Session 10, call 3: the streamed in_proj loads its conv columns' operands (and its bias) before
# the dependency wait. Checks at real shapes, then full-size mamba2-8b (FP16, W4A8 new and
# session-start binaries), then a 16-layer mamba2-2.7b W8A8 (streamed in_proj) side by side.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && xz -dc .device/quambac-prev.xz > /tmp/qo && chmod +x /tmp/qn /tmp/qo
T0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
W=/tmp/w; mkdir -p $W $OUT
/tmp/qn synth --like mamba2-8b --layers 2 --vocab 8192 -o $W/m8c >/dev/null
/tmp/qn compile $W/m8c --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m8c.qmb >/dev/null 2>&1 &
/tmp/qn synth --like mamba2-2.7b --layers 2 --vocab 8192 -o $W/m27c >/dev/null
/tmp/qn compile $W/m27c --target h100-w8a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27c.qmb >/dev/null 2>&1
wait
( for a in $W/m8c.qmb $W/m27c.qmb; do for b in qn qo; do
    echo "== check $b $(basename $a) 1x1 steps 4: $(timeout 120 /tmp/$b cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done; done
  for a in .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --json 2>&1 | tail -1 | cut -c1-300)"
  done ) 2>&1 | tee $OUT/checks.txt
echo "checks done at $(( $(date +%s) - T0 )) s"
ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
/tmp/qn synth --like mamba2-8b -o $W/mamba2-8b >/dev/null
timeout 250 /tmp/qn compile $W/mamba2-8b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba2-8b-w4a8.qmb > $OUT/compile-8b.log 2>&1 &
pid=$!
timeout 120 /tmp/qn cuda bench $W/mamba2-8b --label "mamba2-8b fp16" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
wait $pid
echo "8b compiled at $(( $(date +%s) - T0 )) s"
timeout 100 /tmp/qn cuda bench $W/mamba2-8b-w4a8.qmb --label "mamba2-8b w4a8" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
timeout 100 /tmp/qo cuda bench $W/mamba2-8b-w4a8.qmb --label "mamba2-8b w4a8-session-start" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
python3 bench/gpu_report.py $OUT/gpu.jsonl | tail -6
echo "8b done at $(( $(date +%s) - T0 )) s"
if [ $(( $(date +%s) - T0 )) -lt 420 ]; then
  /tmp/qn synth --like mamba2-2.7b --layers 16 --vocab 8192 -o $W/m27 >/dev/null
  timeout 100 /tmp/qn compile $W/m27 --target h100-w8a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27w8.qmb >/dev/null 2>&1
  A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
  for r in 1 2; do for b in qo qn; do
    [ $(( $(date +%s) - T0 )) -lt 560 ] || break
    echo "| $r | m27w8 | $b | $(timeout 40 /tmp/$b cuda bench $W/m27w8.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |"
  done; done | tee $OUT/stream27w8.md
fi
echo "end at $(( $(date +%s) - T0 )) s"
