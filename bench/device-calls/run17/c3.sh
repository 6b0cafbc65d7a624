#!/usr/bin/env bash
# Session 13, call 3: full size, W4A8 at batch 1 and 16 with a 1024-token prompt, this session's
# binary (qn: the cluster chain and constants before the wait) against the session-start binary
# (qb, 2e7bf64: the code of 25787da), and our FP16 path beside them in the same call
# (synthesized mamba2-2.7b and mamba-2.8b).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-c3.xz > /tmp/qn && xz -dc .device/quambac-new.xz > /tmp/qb && chmod +x /tmp/qn /tmp/qb
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for like in mamba2-2.7b mamba-2.8b; do /tmp/qn synth --like $like -o $W/$like >/dev/null & done
wait
echo "synthesized at $(( $(date +%s) - T0 )) s"
for like in mamba2-2.7b mamba-2.8b; do
  ( timeout 280 /tmp/qn compile $W/$like --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/$like-w4a8.qmb > $OUT/r/compile-$like.log 2>&1 ) &
done
ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
# Our FP16 path needs no compile: timed while the CPU compiles the W4A8 artifacts.
for like in mamba2-2.7b mamba-2.8b; do
  timeout 120 /tmp/qn cuda bench $W/$like --label "$like fp16" --json $ARGS 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  echo "$like fp16 done at $(( $(date +%s) - T0 )) s"
done
wait
echo "compiled at $(( $(date +%s) - T0 )) s"; tail -n 2 $OUT/r/compile-*.log
for job in mamba-2.8b:qn mamba-2.8b:qb mamba2-2.7b:qn mamba2-2.7b:qb mamba-2.8b:qb mamba-2.8b:qn mamba2-2.7b:qb mamba2-2.7b:qn; do
  IFS=: read -r like b <<< "$job"
  left=$(( 570 - ($(date +%s) - T0) ))
  [ $left -gt 50 ] || break
  if [ $b = qn ]; then label="$like w4a8"; else label="$like w4a8-session-start"; fi
  timeout $left /tmp/$b cuda bench $W/$like-w4a8.qmb --label "$label" --json $ARGS 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  echo "$job done at $(( $(date +%s) - T0 )) s"
done
python3 bench/gpu_report.py $OUT/r/full.jsonl | tail -12
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
