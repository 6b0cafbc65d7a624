#!/usr/bin/env bash
# Session 20, call 4: `quambac-j4` = j3 with Mamba1's one-row step asking for the L2 tail at its
# end instead of before its inputs' wait (tests/cuda_sass.rs found a spill before the wait at
# int8 states). Checks, and 16-layer mamba-2.8b W4A8 TPOT at QUAMBA_CUDA_L2_AHEAD 0 and default.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q4=quambac-j4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/q4 mamba-2.8b:2:m28c mamba-2.8b:16:m28
COMPILE_FLAGS=--int8-states build_short /tmp/q4 mamba-2.8b:2:m28ci
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in .device/art/mamba1-*.qmb .device/art2/mamba1-*.qmb $W/m28c.qmb $W/m28ci.qmb; do
    echo "j4 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/q4 cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "| binary, QUAMBA_CUDA_L2_AHEAD | m28 16L W4A8 TPOT b=1 / 16 ms |" > $OUT/r/side.md; echo "|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  echo "| j4, 0 | $(tpot /tmp/q4 $W/m28.qmb QUAMBA_CUDA_L2_AHEAD=0) |" | tee -a $OUT/r/side.md
  echo "| j4, default | $(tpot /tmp/q4 $W/m28.qmb) |" | tee -a $OUT/r/side.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
