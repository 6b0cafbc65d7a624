#!/usr/bin/env bash
# Session 21, call 1: the persistent decode-step feasibility measurement at 64 and 16 layers;
# then `quambac-k0` (the session-start code) on 16-layer mamba2-2.7b / mamba-2.8b W4A8: the L2
# tail asked line by line (QUAMBA_CUDA_L2_AHEAD_LINES=1) against the bulk prefetch and off.
set -uo pipefail
source bench/device-calls/common.sh
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
unpack_binaries q0=quambac-k0.xz
build_short /tmp/q0 mamba2-2.7b:16:m27 mamba-2.8b:16:m28 &
bench/persistent_step.sh 64 $OUT/r/persistent-step-64L.md 2>&1 | tail -30
bench/persistent_step.sh 16 $OUT/r/persistent-step-16L.md 2>&1 | tail -14
wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| tail request | m27 16L W4A8 TPOT b=1 / 16 ms | m28 |" > $OUT/r/lines.md; echo "|---|---|---|" >> $OUT/r/lines.md
for round in 1 2; do
  echo "| off | $(tpot /tmp/q0 $W/m27.qmb QUAMBA_CUDA_L2_AHEAD=0) | $(tpot /tmp/q0 $W/m28.qmb QUAMBA_CUDA_L2_AHEAD=0) |" | tee -a $OUT/r/lines.md
  echo "| bulk (default) | $(tpot /tmp/q0 $W/m27.qmb) | $(tpot /tmp/q0 $W/m28.qmb) |" | tee -a $OUT/r/lines.md
  echo "| lines | $(tpot /tmp/q0 $W/m27.qmb QUAMBA_CUDA_L2_AHEAD_LINES=1) | $(tpot /tmp/q0 $W/m28.qmb QUAMBA_CUDA_L2_AHEAD_LINES=1) |" | tee -a $OUT/r/lines.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
