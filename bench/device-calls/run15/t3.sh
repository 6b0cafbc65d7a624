#!/usr/bin/env bash
# Session 11, call 3: the 8-layer mamba2-8b's out_proj (ring, ~1.3 TB/s in the trace) streamed or
# bulk-fetched, by knobs; the 16-layer mamba2-2.7b with its products streamed. TPOT side by side,
# then traces of the 8B variants.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/v
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/v/card.txt
W=/tmp/w; mkdir -p $W
/tmp/qn synth --like mamba2-8b --layers 8 --vocab 8192 -o $W/m8 >/dev/null
timeout 150 /tmp/qn compile $W/m8 --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m8.qmb >/dev/null 2>&1 &
/tmp/qn synth --like mamba2-2.7b --layers 16 --vocab 8192 -o $W/m27 >/dev/null
timeout 150 /tmp/qn compile $W/m27 --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27.qmb >/dev/null 2>&1
wait
echo "built at $(( $(date +%s) - T0 )) s"
export BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
timeout 260 bench/gpu_variants.sh /tmp/qn "- QUAMBA_CUDA_GEMV_STREAM_SHAPE=1x1x8 QUAMBA_CUDA_GEMV_STREAM_SHAPE=1x1x16 QUAMBA_CUDA_GEMV_BULK_BLOCKS=600,QUAMBA_CUDA_CARVEOUT=95 QUAMBA_CUDA_GEMV_STREAM=all" $W/m8.qmb | tee $OUT/v/m8-variants.md
echo "8b variants at $(( $(date +%s) - T0 )) s"
[ $(( $(date +%s) - T0 )) -lt 420 ] && timeout 100 bench/gpu_variants.sh /tmp/qn "- QUAMBA_CUDA_GEMV_STREAM=all QUAMBA_CUDA_GEMV_STREAM=all,QUAMBA_CUDA_GEMV_STREAM_SHAPE=1x1x16" $W/m27.qmb | tee $OUT/v/m27-variants.md
for v in QUAMBA_CUDA_GEMV_STREAM_SHAPE=1x1x8 QUAMBA_CUDA_GEMV_STREAM_SHAPE=1x1x16; do
  [ $(( $(date +%s) - T0 )) -lt 540 ] || break
  env $v timeout 30 /tmp/qn cuda trace $W/m8.qmb --steps 4 > $OUT/v/trace-m8-${v##*=}.md 2>&1
done
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/v.tgz v && rm -rf $OUT/v
