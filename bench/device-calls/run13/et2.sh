#!/usr/bin/env bash
# Session 9, call 2: the next RMS norm -> quantize in out_proj's last block (QUAMBA_CUDA_ROW_TAIL)
# and the SSD block 8x16, side by side; checks.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/quambac && chmod +x /tmp/quambac
Q=/tmp/quambac
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p $OUT
W=/tmp/w; mkdir -p $W
( for v in 1 0; do
  for a in .device/art/m2t-w4a8.qmb .device/art/m2t-w8a8.qmb .device/art/m1t-w4a8.qmb; do
    for shape in "1 1" "2 64"; do
      set -- $shape
      echo "== check tail=$v $(basename $a) $1x$2: $(QUAMBA_CUDA_ROW_TAIL=$v timeout 100 $Q cuda check $a --batch $1 --seq $2 --json 2>&1 | tail -1 | cut -c1-330)"
    done
  done
done
for a in .device/art/m2s-w4a8.qmb .device/art/m1s-w4a8.qmb; do
  echo "== check tail=1 $(basename $a) 1x8: $(timeout 150 $Q cuda check $a --batch 1 --seq 8 --json 2>&1 | tail -1 | cut -c1-330)"
done ) 2>&1 | tee $OUT/checks.txt
t0=$(date +%s)
for spec in mamba2-2.7b:16 mamba-2.8b:16 mamba2-8b:8; do
  like=${spec%:*}; n=${spec#*:}
  timeout 200 $Q synth --like $like --layers $n --vocab 8192 -o $W/$like-$n >/dev/null
  timeout 200 $Q compile $W/$like-$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$like-$n.qmb >/dev/null 2>&1
done
echo "models built in $(( $(date +%s) - t0 )) s"
QUAMBA_CUDA_ROW_TAIL=1 timeout 100 $Q cuda check $W/mamba2-2.7b-16.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330 | tee -a $OUT/checks.txt
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 330 bench/gpu_variants.sh $Q \
  "- QUAMBA_CUDA_ROW_TAIL=0 QUAMBA_CUDA_SSD_SHAPE=8x16" \
  $W/mamba2-2.7b-16.qmb $W/mamba-2.8b-16.qmb $W/mamba2-8b-8.qmb 2>&1 | tee $OUT/variants.md
