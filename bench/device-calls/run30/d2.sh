#!/usr/bin/env bash
# Session 26, call 2: where the prefill products' time goes. 2-layer mamba-2.8b (real shapes,
# vocabulary 8192), W4A8 and FP16, binary `quambac-d1` (23e0e2b): the first prefill's tiled
# products under Nsight Compute with the full section set and per-instruction stall samples.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-d1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q1 mamba-2.8b:2:m28
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for c in w4a8:$W/m28.qmb fp16:$W/m28; do
  n=${c%%:*}; art=${c#*:}
  timeout 150 ncu --clock-control none -k regex:'^gemm_' --launch-count 4 --set full --import-source no -o $OUT/r/rep-$n /tmp/q1 cuda bench $art $P > $OUT/r/ncu-$n.log 2>&1
  ncu --import $OUT/r/rep-$n.ncu-rep --page details > $OUT/r/details-$n.txt 2>&1
  ncu --import $OUT/r/rep-$n.ncu-rep --page source --print-source sass --csv > $OUT/r/source-$n.csv 2>&1
  echo "$n at $(elapsed) s" | tee -a $OUT/r/times.txt
done
rm -f $OUT/r/*.ncu-rep
pack_results
