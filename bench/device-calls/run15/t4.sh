#!/usr/bin/env bash
# Session 11, call 4: knob-only shapes of the one-row products, side by side. 8-layer mamba2-8b:
# the streamed in_proj with 3 blocks per SM, 16 warps, 3 with 16 warps; the ring out_proj
# deeper or wider. 16-layer mamba2-2.7b / mamba-2.8b: bulk products with 12 warps (3 k-slices).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/v
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/v/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-8b:8:m8 mamba2-2.7b:16:m27 mamba-2.8b:16:m28; do
  IFS=: read -r like l n <<< "$s"
  [ -f $W/$n.qmb ] && continue
  /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null
  timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
export BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
timeout 270 bench/gpu_variants.sh /tmp/qn "- QUAMBA_CUDA_GEMV_STREAM_SHAPE=3x1x8 QUAMBA_CUDA_GEMV_STREAM_SHAPE=2x1x16 QUAMBA_CUDA_GEMV_STREAM_SHAPE=3x1x16 QUAMBA_CUDA_GEMV=8x8x16 QUAMBA_CUDA_GEMV=8x8x8 QUAMBA_CUDA_GEMV=16x4x4" $W/m8.qmb | tee $OUT/v/m8-variants.md
echo "8b variants at $(( $(date +%s) - T0 )) s"
[ $(( $(date +%s) - T0 )) -lt 430 ] && timeout 130 bench/gpu_variants.sh /tmp/qn "- QUAMBA_CUDA_GEMV=12x4x7" $W/m27.qmb $W/m28.qmb | tee $OUT/v/m27-m28-variants.md
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/v.tgz v && rm -rf $OUT/v
