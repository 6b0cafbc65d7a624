#!/usr/bin/env bash
# Session 25, call 2: c1 (call 1); c3 = c1 + each (step, channel) of dt and x loaded, converted
# (and Δ computed) once a block, passed on through shared memory; c2 = c3 + the window's decay by
# ex2.approx (2^(Δ·A·log2 e)) and Δ·x once a step. Checks of c2, then 4-layer mamba-2.8b TTFT
# of c1, c3, c2 and c2's block shapes, then c2's prefill under Nsight Compute.
# (As run, the checks, TTFT rows and Nsight Compute runs were written out here; they are now
# common.sh's helpers.)
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-c1.xz q2=quambac-c2.xz q3=quambac-c3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q2 mamba-2.8b:4:m28 mamba-2.8b:2:m28c
( timeout 150 /tmp/q2 compile $W/m28c --target h100-w4a8 --int8-states --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28c-i8.qmb > $W/m28c-i8.log 2>&1 || echo "int8 states m28c failed" ) & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( check_models /tmp/q2 m28c-w4a8:$W/m28c.qmb m28c-fp16:$W/m28c m28c-w4a8-int8-states:$W/m28c-i8.qmb shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb shared-m1tiny-ss-w4a16:.device/arts/mamba1-tiny-ss-w4a16.qmb
  check_models /tmp/q3 "m28c-w4a8 c3:$W/m28c.qmb" | head -1
  QUAMBA_CUDA_SCAN_PREFILL_SHAPE=16x8 check_models /tmp/q2 "m28c-w4a8 c2 16x8:$W/m28c.qmb" | tail -1
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | c1 | c3 | c2 32x4 | c2 16x8 | c2 8x8 | c2 16x4 | c2 32x2 | c2 32x8 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m28-w4a8:$W/m28.qmb m28-fp16:$W/m28; do
  ttft_row "${a%%:*}" "${a#*:}" /tmp/q1 /tmp/q3 "/tmp/q2 QUAMBA_CUDA_SCAN_PREFILL_SHAPE="{32x4,16x8,8x8,16x4,32x2,32x8} | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
[ "$(elapsed)" -lt 480 ] && ncu_prefill /tmp/q2 $W/m28.qmb m28-4L-w4a8-c2
[ "$(elapsed)" -lt 520 ] && timeout 70 ncu --clock-control none -k regex:'^scan_17' --launch-count 1 --section SchedulerStats --section WarpStateStats --section ComputeWorkloadAnalysis /tmp/q2 cuda bench $W/m28.qmb $P > $OUT/r/ncu-scan-sections.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
