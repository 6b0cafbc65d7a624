#!/usr/bin/env bash
# Session 26, call 4: d3 was faster under Nsight Compute (in_proj 183 -> 164 us) but slower in
# the 4-layer TTFT. `quambac-d4` = d3 + QUAMBA_CUDA_TILED_VARIANT: 0 = d3 (a group folded right
# after its last mma, the slab's barrier at its first step), 1 = the group folded after the next
# slab's barrier (as d1) with ldmatrix / 16x nibbles / planned copies, 2 = the next slab's barrier
# at the last step of a slab (after its fragments are loaded), so that the fold and the next
# chunk's first mma are not separated by a barrier. TTFT d1 against the three, two rounds.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-d1.xz q4=quambac-d4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q4 mamba-2.8b:4:m28 mamba-2.8b:2:m28c mamba2-2.7b:4:m27
for t in w8a8 w4a16; do
  ( timeout 150 /tmp/q4 compile $W/m28 --target h100-$t --no-gptq --calib-samples 2 --calib-len 64 -o $W/m28-$t.qmb > $W/m28-$t.log 2>&1 || echo "$t m28 failed" ) &
done
/tmp/q4 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
for v in 1 2; do QUAMBA_CUDA_TILED_VARIANT=$v check_models /tmp/q4 "tiny-w4a8 v$v:$W/tiny-w4a8.qmb" "m28c-w4a8 v$v:$W/m28c.qmb" "m28c-fp16 v$v:$W/m28c"; done 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | d1 | v0 | v1 | v2 | d1 | v0 | v1 | v2 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
V=("/tmp/q1" "/tmp/q4 QUAMBA_CUDA_TILED_VARIANT=0" "/tmp/q4 QUAMBA_CUDA_TILED_VARIANT=1" "/tmp/q4 QUAMBA_CUDA_TILED_VARIANT=2")
for a in m28-w4a8:$W/m28.qmb m28-w8a8:$W/m28-w8a8.qmb m28-w4a16:$W/m28-w4a16.qmb m28-fp16:$W/m28 m27-w4a8:$W/m27.qmb; do
  ttft_row "${a%%:*}" "${a#*:}" "${V[@]}" "${V[@]}" | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
[ "$(elapsed)" -lt 430 ] && QUAMBA_CUDA_TILED_VARIANT=2 ncu_prefill /tmp/q4 $W/m28.qmb m28-4L-w4a8-v2
[ "$(elapsed)" -lt 470 ] && QUAMBA_CUDA_TILED_VARIANT=1 ncu_prefill /tmp/q4 $W/m28.qmb m28-4L-w4a8-v1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
