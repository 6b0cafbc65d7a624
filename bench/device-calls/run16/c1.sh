#!/usr/bin/env bash
# Session 12, call 1: the trace with corrected end stamps and the landed / summed marks (16-layer
# mamba2-2.7b and mamba-2.8b W4A8), the same with QUAMBA_CUDA_ROW_TRIGGER=exit (the launch after
# a row kernel is scheduled only when the row kernel exits), and that knob's TPOT side by side.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/quamba-trace; mkdir -p $W
for s in mamba2-2.7b:16 mamba-2.8b:16; do
  IFS=: read -r like l <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$like-$l >/dev/null &&
    timeout 150 /tmp/qn compile $W/$like-$l --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$like-$l-w4a8.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
for m in mamba2-2.7b-16 mamba-2.8b-16; do
  timeout 60 /tmp/qn cuda trace $W/$m-w4a8.qmb --steps 4 --svg $OUT/r/trace-$m.svg > $OUT/r/trace-$m.md 2>&1
  timeout 60 /tmp/qn cuda trace $W/$m-w4a8.qmb --steps 4 --json > $OUT/r/trace-$m.json 2>&1
  QUAMBA_CUDA_ROW_TRIGGER=exit timeout 60 /tmp/qn cuda trace $W/$m-w4a8.qmb --steps 4 > $OUT/r/trace-$m-exit.md 2>&1
done
echo "traces at $(( $(date +%s) - T0 )) s"
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 200 bench/gpu_variants.sh /tmp/qn "- QUAMBA_CUDA_ROW_TRIGGER=exit" $W/mamba2-2.7b-16-w4a8.qmb $W/mamba-2.8b-16-w4a8.qmb | tee $OUT/r/row-trigger.md
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
