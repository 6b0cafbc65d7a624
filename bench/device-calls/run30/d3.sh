#!/usr/bin/env bash
# Session 26, call 3: `quambac-d3` = d1 + the tiled prefill product's slab copies planned once,
# int8 fragments by ldmatrix, int4 weights as 16 times their value, groups started from zero.
# Checks (the tiny model's W4A8 must stay bit-exact), then 4-layer TTFT d1 against d3, two rounds.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-d1.xz q3=quambac-d3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q3 mamba-2.8b:4:m28 mamba-2.8b:2:m28c mamba2-2.7b:4:m27 mamba2-2.7b:2:m27c
for t in w8a8 w4a16; do
  ( timeout 150 /tmp/q3 compile $W/m28 --target h100-$t --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28-$t.qmb > $W/m28-$t.log 2>&1 || echo "$t m28 failed" ) &
  ( timeout 150 /tmp/q3 compile $W/m28c --target h100-$t --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28c-$t.qmb > $W/m28c-$t.log 2>&1 || echo "$t m28c failed" ) &
done
/tmp/q3 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
check_models /tmp/q3 tiny-w4a8:$W/tiny-w4a8.qmb m28c-w4a8:$W/m28c.qmb m28c-fp16:$W/m28c m28c-w8a8:$W/m28c-w8a8.qmb m28c-w4a16:$W/m28c-w4a16.qmb \
  m27c-w4a8:$W/m27c.qmb m27c-fp16:$W/m27c shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb shared-m2small-w4a16:.device/arts/mamba2-small-w4a16.qmb 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | d1 | d3 | d1 | d3 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m28-w4a8:$W/m28.qmb m28-fp16:$W/m28 m28-w8a8:$W/m28-w8a8.qmb m28-w4a16:$W/m28-w4a16.qmb m27-w4a8:$W/m27.qmb m27-fp16:$W/m27; do
  ttft_row "${a%%:*}" "${a#*:}" /tmp/q1 /tmp/q3 /tmp/q1 /tmp/q3 | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for c in w4a8:$W/m28.qmb fp16:$W/m28; do
  [ "$(elapsed)" -lt 480 ] && ncu_prefill /tmp/q3 "${c#*:}" "m28-4L-${c%%:*}-d3"
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
