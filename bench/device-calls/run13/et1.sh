#!/usr/bin/env bash
# Session 9, call 1: early PDL triggers (rows / all) and SSD block shapes, side by side; checks.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/quambac && chmod +x /tmp/quambac
Q=/tmp/quambac
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
mkdir -p $OUT
W=/tmp/w; mkdir -p $W
# correctness: every early-trigger level on the tiny artifacts, 1x1 and 2x64
for v in 0 rows all; do
  for a in .device/art/*.qmb; do
    for shape in "1 1" "2 64"; do
      set -- $shape
      echo "== check $v $(basename $a) $1x$2: $(QUAMBA_CUDA_EARLY_TRIGGER=$v timeout 120 $Q cuda check $a --batch $1 --seq $2 --json 2>&1 | tail -1 | cut -c1-400)"
    done
  done
done 2>&1 | tee $OUT/checks.txt
# models for timing
t0=$(date +%s)
for spec in mamba2-2.7b:16 mamba-2.8b:16 mamba2-8b:8; do
  like=${spec%:*}; n=${spec#*:}
  timeout 200 $Q synth --like $like --layers $n --vocab 8192 -o $W/$like-$n >/dev/null
  timeout 200 $Q compile $W/$like-$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$like-$n.qmb >/dev/null 2>&1
  ls -la $W/$like-$n.qmb
done
echo "models built in $(( $(date +%s) - t0 )) s"
# a 2-layer 2.7B check under all (CPU reference of real shapes)
QUAMBA_CUDA_EARLY_TRIGGER=all timeout 200 $Q cuda check $W/mamba2-2.7b-16.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400 | tee -a $OUT/checks.txt
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 300 bench/gpu_variants.sh $Q \
  "- QUAMBA_CUDA_EARLY_TRIGGER=rows QUAMBA_CUDA_EARLY_TRIGGER=all" \
  $W/mamba2-2.7b-16.qmb $W/mamba-2.8b-16.qmb $W/mamba2-8b-8.qmb 2>&1 | tee $OUT/variants.md
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 150 bench/gpu_variants.sh $Q \
  "- QUAMBA_CUDA_SSD_SHAPE=16x16 QUAMBA_CUDA_SSD_SHAPE=4x64 QUAMBA_CUDA_SSD_SHAPE=8x16 QUAMBA_CUDA_SSD_SHAPE=32x8" \
  $W/mamba2-2.7b-16.qmb 2>&1 | tee $OUT/ssd.md
WORK=/tmp/lp timeout 150 bench/gpu_layer_profile.sh $Q mamba2-2.7b w4a8 2 2>&1 | tee $OUT/profile27.md
