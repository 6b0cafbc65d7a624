#!/usr/bin/env bash
# Session 18, call 1: are in_proj's blocks resident beside out_proj's? Traces with the count of
# blocks that begin only after the previous launch has ended, and 16-layer TPOT with the
# carveout raised and out_proj's blocks made smaller (fewer k-slices: fewer registers), so that
# in_proj's three blocks per SM could start (and stream their weights) while out_proj runs.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qh=quambac-h1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qh mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s" | tee $OUT/r/times.txt
trace() { timeout 90 /tmp/qh cuda trace "$@" --steps 4 2>&1; }
trace $W/m27.qmb > $OUT/r/trace-m27-default.md
env QUAMBA_CUDA_CARVEOUT=100 QUAMBA_CUDA_GEMV_AT=5120x2560:1x4 /tmp/qh cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-c100-out1x4.md 2>&1
trace $W/m28.qmb > $OUT/r/trace-m28-default.md
echo "traces at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| variant | m27 TPOT b=1 / 16 ms | m28 TPOT b=1 / 16 ms |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
row() { local name=$1; shift; echo "| $name | $(tpot /tmp/qh $W/m27.qmb "$@") | $(tpot /tmp/qh $W/m28.qmb "$@") |" | tee -a $OUT/r/side.md; }
for round in 1 2; do
  row "default ($round)"
  row "carveout 100" QUAMBA_CUDA_CARVEOUT=100
  row "out_proj 1x4" QUAMBA_CUDA_GEMV_AT=5120x2560:1x4
  row "carveout 100, out_proj 1x4" QUAMBA_CUDA_CARVEOUT=100 QUAMBA_CUDA_GEMV_AT=5120x2560:1x4
  row "carveout 90, out_proj 1x4" QUAMBA_CUDA_CARVEOUT=90 QUAMBA_CUDA_GEMV_AT=5120x2560:1x4
  row "carveout 100, out_proj 2x4" QUAMBA_CUDA_CARVEOUT=100 QUAMBA_CUDA_GEMV_AT=5120x2560:2x4
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
