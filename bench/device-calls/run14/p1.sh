#!/usr/bin/env bash
# Session 10, call 1: L2 prefetch of the next products' weights from the SSD step / scan
# (QUAMBA_CUDA_L2_PREFETCH=0 off, default half the L2), side by side; checks.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/quambac && chmod +x /tmp/quambac
Q=/tmp/quambac
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p $OUT
W=/tmp/w; mkdir -p $W
( for v in - 0; do
  for a in .device/art/*.qmb; do
    for shape in "1 1" "2 64"; do
      set -- $shape
      echo "== check prefetch=$v $(basename $a) $1x$2: $( ( [ $v = 0 ] && export QUAMBA_CUDA_L2_PREFETCH=0; timeout 100 $Q cuda check $a --batch $1 --seq $2 --json 2>&1 | tail -1 | cut -c1-330) )"
    done
  done
done ) 2>&1 | tee $OUT/checks.txt
for spec in mamba2-2.7b:16 mamba-2.8b:16 mamba2-8b:8; do
  like=${spec%:*}; n=${spec#*:}
  timeout 200 $Q synth --like $like --layers $n --vocab 8192 -o $W/$like-$n >/dev/null
  timeout 200 $Q compile $W/$like-$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$like-$n.qmb >/dev/null 2>&1
done
echo "models built at $(( $(date +%s) - T0 )) s"
timeout 100 $Q cuda check $W/mamba2-2.7b-16.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330 | tee -a $OUT/checks.txt
BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout 240 bench/gpu_variants.sh $Q \
  "- QUAMBA_CUDA_L2_PREFETCH=0" \
  $W/mamba2-2.7b-16.qmb $W/mamba-2.8b-16.qmb $W/mamba2-8b-8.qmb 2>&1 | tee $OUT/variants.md
echo "variants done at $(( $(date +%s) - T0 )) s"
if [ $(( $(date +%s) - T0 )) -lt 330 ]; then
  timeout 100 $Q synth --like mamba2-2.7b -o $W/m27full >/dev/null
  timeout 150 $Q compile $W/m27full --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27full.qmb >/dev/null 2>&1
  echo "full model at $(( $(date +%s) - T0 )) s"
  BENCH_ARGS="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5" timeout $(( 560 - $(date +%s) + T0 )) bench/gpu_variants.sh $Q \
    "- QUAMBA_CUDA_L2_PREFETCH=0" $W/m27full.qmb 2>&1 | tee $OUT/full27.md
fi
echo "end at $(( $(date +%s) - T0 )) s"
