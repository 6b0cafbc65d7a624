#!/usr/bin/env bash
# Session 9, call 3: conv columns' operands loaded before in_proj's dependency wait; the session
# start binary side by side, full-size models.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && xz -dc .device/quambac-old.xz > /tmp/qo && chmod +x /tmp/qn /tmp/qo
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p $OUT
( for a in .device/art/m2t-w4a8.qmb .device/art/m2t-w8a8.qmb .device/art/m1t-w4a8.qmb; do
    echo "== check new $(basename $a) 1x1: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --json 2>&1 | tail -1 | cut -c1-300)"
  done
  echo "== check new m1t-w4a8 1x64: $(timeout 60 /tmp/qn cuda check .device/art/m1t-w4a8.qmb --batch 1 --seq 64 --json 2>&1 | tail -1 | cut -c1-300)"
  echo "== check old m1t-w4a8 1x64: $(timeout 60 /tmp/qo cuda check .device/art/m1t-w4a8.qmb --batch 1 --seq 64 --json 2>&1 | tail -1 | cut -c1-300)"
) 2>&1 | tee $OUT/checks.txt
W=/tmp/w; mkdir -p $W
ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
for like in mamba-2.8b mamba2-2.7b mamba2-8b; do
  /tmp/qn synth --like $like -o $W/$like >/dev/null || continue
  timeout 200 /tmp/qn compile $W/$like --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/$like-w4a8.qmb > $OUT/compile-$like.log 2>&1 &
  pid=$!
  timeout 100 /tmp/qn cuda bench $W/$like --label "$like fp16" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
  wait $pid
  timeout 100 /tmp/qn cuda bench $W/$like-w4a8.qmb --label "$like w4a8" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
  timeout 100 /tmp/qo cuda bench $W/$like-w4a8.qmb --label "$like w4a8-session-start" --json $ARGS | tail -1 | tee -a $OUT/gpu.jsonl
  python3 bench/gpu_report.py $OUT/gpu.jsonl | tail -12
done
