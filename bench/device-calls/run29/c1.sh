#!/usr/bin/env bash
# Session 25, call 1: `quambac-c1` = 92e4860 + Mamba1's prefill scan on whole windows
# (`channel_window`: Δ first, spread over the channel's lanes, steps unrolled without a bound,
# one transposed sum a window, a thread's states together). Checks (Mamba1 shapes first), 4-layer
# mamba-2.8b TTFT of b7 against c1's block shapes, then the prefill under Nsight Compute.
# (As run, the checks, TTFT rows and Nsight Compute runs were written out here; they are now
# common.sh's helpers.)
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q7=quambac-b7.xz q1=quambac-c1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q1 mamba-2.8b:4:m28 mamba-2.8b:2:m28c mamba2-2.7b:2:m27c
( timeout 150 /tmp/q1 compile $W/m28c --target h100-w4a8 --int8-states --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28c-i8.qmb > $W/m28c-i8.log 2>&1 || echo "int8 states m28c failed" ) &
( timeout 150 /tmp/q1 compile $W/m28 --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28-w4a16.qmb > $W/m28-w4a16.log 2>&1 || echo "w4a16 m28 failed" ) &
/tmp/q1 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( check_models /tmp/q1 m28c-w4a8:$W/m28c.qmb m28c-fp16:$W/m28c m28c-w4a8-int8-states:$W/m28c-i8.qmb shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb tiny-w4a8:$W/tiny-w4a8.qmb m27c-w4a8:$W/m27c.qmb
  check_models /tmp/q7 "m28c-w4a8 b7:$W/m28c.qmb" | head -1
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | b7 | c1 32x4 | c1 16x4 | c1 8x4 | c1 16x8 | c1 8x8 | c1 16x2 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m28-w4a8:$W/m28.qmb m28-fp16:$W/m28 m28-w4a16:$W/m28-w4a16.qmb; do
  ttft_row "${a%%:*}" "${a#*:}" /tmp/q7 "/tmp/q1 QUAMBA_CUDA_SCAN_PREFILL_SHAPE="{32x4,16x4,8x4,16x8,8x8,16x2} | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for c in w4a8:$W/m28.qmb fp16:$W/m28; do
  [ "$(elapsed)" -lt 470 ] && ncu_prefill /tmp/q1 "${c#*:}" "m28-4L-${c%%:*}-c1"
done
[ "$(elapsed)" -lt 500 ] && timeout 80 ncu --clock-control none -k regex:'^scan_17' --launch-count 1 --section SchedulerStats --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis /tmp/q1 cuda bench $W/m28.qmb $P > $OUT/r/ncu-scan-sections.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
