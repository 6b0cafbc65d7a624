#!/usr/bin/env bash
# Session 25, call 5: `quambac-c5` = c4 + the prefill selective scan's window as a knob
# (QUAMBA_CUDA_SCAN_PREFILL_WINDOW=8|16|32: a longer window hides the next window's loads behind
# more work). Checks at 16 and 32, 4-layer mamba-2.8b TTFT at 8 / 16 / 32 (two rounds).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q5=quambac-c5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q5 mamba-2.8b:4:m28 mamba-2.8b:2:m28c
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
for w in 16 32; do QUAMBA_CUDA_SCAN_PREFILL_WINDOW=$w check_models /tmp/q5 "m28c-w4a8 window $w:$W/m28c.qmb" "m28c-fp16 window $w:$W/m28c"; done 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | window 8 | 16 | 32 | 8 | 16 | 32 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m28-w4a8:$W/m28.qmb m28-fp16:$W/m28; do
  ttft_row "${a%%:*}" "${a#*:}" "/tmp/q5 QUAMBA_CUDA_SCAN_PREFILL_WINDOW="{8,16,32,8,16,32} | tee -a $OUT/r/ttft.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
