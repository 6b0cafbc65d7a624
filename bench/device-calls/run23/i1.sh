#!/usr/bin/env bash
# Session 19, call 1: where in_proj's time after its wait goes. `quambac-i1` is the session-start
# kernels plus the trace's per-block medians (wait → landed, wait → sums) and experiment-only
# switches (`QUAMBA_EXP_DEFINES`, prepended to the generated source as #defines):
#   EXP_LANDED_AT_STAGE  in_proj's "landed" mark right after its norm prologue (before its tiles' barrier)
#   EXP_NO_NORM          no norm prologue at all (the stage is left as it is: timing only)
#   EXP_NO_NORM_REDUCE   the prologue without its sum of squares and block reduction (timing only)
#   EXP_RECIP            the prologue's quantize multiplies by 1/scale instead of dividing (not exact)
# Then in_proj's block layouts through QUAMBA_CUDA_GEMV_AT (fewer, larger blocks).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qi=quambac-i1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qi mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s" | tee $OUT/r/times.txt
/tmp/qi cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
QUAMBA_EXP_DEFINES=EXP_LANDED_AT_STAGE /tmp/qi cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-landed-at-stage.md 2>&1
/tmp/qi cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
QUAMBA_EXP_DEFINES=EXP_LANDED_AT_STAGE /tmp/qi cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28-landed-at-stage.md 2>&1
echo "traced at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| variant | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
row() { local name=$1; shift; echo "| $name | $(tpot /tmp/qi $W/m27.qmb "$@") | $(tpot /tmp/qi $W/m28.qmb "$@") |" | tee -a $OUT/r/side.md; }
for round in 1 2; do
  row "as committed (round $round)"
  row "EXP_NO_NORM (timing only)" QUAMBA_EXP_DEFINES=EXP_NO_NORM
  row "EXP_NO_NORM_REDUCE (timing only)" QUAMBA_EXP_DEFINES=EXP_NO_NORM_REDUCE
  row "EXP_RECIP (not exact)" QUAMBA_EXP_DEFINES=EXP_RECIP
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
row "in_proj 4x2x2 (8 tiles, 256 threads), 100 KB" "QUAMBA_CUDA_GEMV_AT=2560x10576:4x2x2;2560x10240:4x2x2" QUAMBA_CUDA_GEMV_BULK_KB=100
row "in_proj 4x4x2 (8 tiles, 512 threads), 100 KB" "QUAMBA_CUDA_GEMV_AT=2560x10576:4x4x2;2560x10240:4x4x2" QUAMBA_CUDA_GEMV_BULK_KB=100
row "in_proj 2x8x2 (4 tiles, 512 threads)" "QUAMBA_CUDA_GEMV_AT=2560x10576:2x8x2;2560x10240:2x8x2"
row "in_proj 1x8x2 (2 tiles, 256 threads)" "QUAMBA_CUDA_GEMV_AT=2560x10576:1x8x2;2560x10240:1x8x2"
row "as committed (round 3)"
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
