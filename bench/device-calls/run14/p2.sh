#!/usr/bin/env bash
# Session 10, call 2: how and when the L2 prefetch is issued (QUAMBA_CUDA_L2_PREFETCH_MODE bits:
# 1 line by line, 2 at the kernel's end) and how much (QUAMBA_CUDA_L2_PREFETCH MiB), side by side.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/quambac && chmod +x /tmp/quambac
Q=/tmp/quambac
T0=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p $OUT
W=/tmp/w; mkdir -p $W
( for v in 0 1 2 3; do
  for a in .device/art/*.qmb; do
    echo "== check mode=$v $(basename $a) 1x1: $(QUAMBA_CUDA_L2_PREFETCH_MODE=$v timeout 100 $Q cuda check $a --batch 1 --seq 1 --json 2>&1 | tail -1 | cut -c1-300)"
  done
done ) 2>&1 | tee $OUT/checks.txt
for spec in mamba2-2.7b:16 mamba-2.8b:16; do
  like=${spec%:*}; n=${spec#*:}
  timeout 200 $Q synth --like $like --layers $n --vocab 8192 -o $W/$like-$n >/dev/null
  timeout 200 $Q compile $W/$like-$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$like-$n.qmb >/dev/null 2>&1
done
echo "models built at $(( $(date +%s) - T0 )) s"
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 420 bench/gpu_variants.sh $Q \
  "- QUAMBA_CUDA_L2_PREFETCH=0 QUAMBA_CUDA_L2_PREFETCH_MODE=1 QUAMBA_CUDA_L2_PREFETCH_MODE=2 QUAMBA_CUDA_L2_PREFETCH_MODE=3 QUAMBA_CUDA_L2_PREFETCH=8 QUAMBA_CUDA_L2_PREFETCH=8,QUAMBA_CUDA_L2_PREFETCH_MODE=2" \
  $W/mamba2-2.7b-16.qmb $W/mamba-2.8b-16.qmb 2>&1 | tee $OUT/variants.md
echo "end at $(( $(date +%s) - T0 )) s"
