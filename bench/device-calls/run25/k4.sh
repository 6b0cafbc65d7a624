#!/usr/bin/env bash
# Session 21, call 6: why W4A16 decodes at 1.15x our FP16 (full size, k3): 16-layer mamba2-2.7b
# and mamba-2.8b W4A16 (`quambac-k0`), the decode products' layout knobs swept side by side
# (QUAMBA_CUDA_DECODE=WARPS,DEPTH and QUAMBA_CUDA_DECODE_NT), W4A8 and FP16 beside them, and a
# trace of the mamba2-2.7b W4A16 step.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-k0.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a16 build_short /tmp/q0 mamba2-2.7b:16:m27h mamba-2.8b:16:m28h
build_short /tmp/q0 mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| variant | m27 16L TPOT b=1 / 16 ms | m28 |" > $OUT/r/w4a16.md; echo "|---|---|---|" >> $OUT/r/w4a16.md
row() { local label=$1; shift; echo "| $label | $(tpot /tmp/q0 $W/m27h.qmb "$@") | $(tpot /tmp/q0 $W/m28h.qmb "$@") |" | tee -a $OUT/r/w4a16.md; }
row "W4A16 (plan: 7 warps x 3 chunks, 1 tile per warp)"
row "W4A16 DECODE_NT=2" QUAMBA_CUDA_DECODE_NT=2
row "W4A16 DECODE_NT=4" QUAMBA_CUDA_DECODE_NT=4
row "W4A16 DECODE=4,8" QUAMBA_CUDA_DECODE=4,8
row "W4A16 DECODE=16,2" QUAMBA_CUDA_DECODE=16,2
row "W4A16 DECODE=20,1" QUAMBA_CUDA_DECODE=20,1
row "W4A16 DECODE=4,8 NT=2" QUAMBA_CUDA_DECODE=4,8 QUAMBA_CUDA_DECODE_NT=2
row "W4A16 DECODE=2,8 NT=4" QUAMBA_CUDA_DECODE=2,8 QUAMBA_CUDA_DECODE_NT=4
row "W4A16 DECODE=16,2 NT=2" QUAMBA_CUDA_DECODE=16,2 QUAMBA_CUDA_DECODE_NT=2
row "W4A16 STAGE_A=0 (no activation staging)" QUAMBA_CUDA_STAGE_A=0
echo "| W4A8 | $(tpot /tmp/q0 $W/m27.qmb) | $(tpot /tmp/q0 $W/m28.qmb) |" | tee -a $OUT/r/w4a16.md
echo "| FP16 (checkpoint) | $(tpot /tmp/q0 $W/m27) | $(tpot /tmp/q0 $W/m28) |" | tee -a $OUT/r/w4a16.md
/tmp/q0 cuda trace $W/m27h.qmb --steps 3 > $OUT/r/trace-m27-w4a16.md 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
