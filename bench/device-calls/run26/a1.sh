#!/usr/bin/env bash
# Session 22, call 1: `quambac-a1` = e3172c5 with W4A16's one-row products on `quamba::gemv`
# (int4 weights against f16 activations on the tensor cores, `quamba::HalfDot`). Checks against
# the CPU reference (tiny W4A16 and W4A8; 2-layer real shapes W4A16), then 16-layer (8B: 8-layer)
# W4A16 TPOT with the GEMV and without it (QUAMBA_CUDA_GEMV=0: the session start's W4A16 path).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-a1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a16 build_short /tmp/q1 mamba2-2.7b:16:m27h mamba-2.8b:16:m28h mamba2-8b:8:m8h mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c
/tmp/q1 compile --target h100-w4a16 -o $W/tiny16.qmb >/dev/null 2>&1
/tmp/q1 compile --target h100-w4a8 -o $W/tiny8.qmb >/dev/null 2>&1
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for shape in "1 1" "2 64"; do read -r b s <<< "$shape"
    echo "tiny w4a16 ${b}x$s: $(/tmp/q1 cuda check $W/tiny16.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"
    echo "tiny w4a8 ${b}x$s: $(/tmp/q1 cuda check $W/tiny8.qmb --batch $b --seq $s --json 2>&1 | tail -1 | summary)"; done
  for m in m27c m28c m8c; do echo "$m w4a16 1x1 steps 4: $(timeout 90 /tmp/q1 cuda check $W/$m.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"; done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| W4A16 products at one row | m27 16L TPOT b=1 / 16 ms | m28 16L | m8 8L |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  echo "| gemv (round $round) | $(tpot /tmp/q1 $W/m27h.qmb) | $(tpot /tmp/q1 $W/m28h.qmb) | $(tpot /tmp/q1 $W/m8h.qmb) |" | tee -a $OUT/r/side.md
  echo "| tensor-core decode kernel, QUAMBA_CUDA_GEMV=0 (round $round) | $(tpot /tmp/q1 $W/m27h.qmb QUAMBA_CUDA_GEMV=0) | $(tpot /tmp/q1 $W/m28h.qmb QUAMBA_CUDA_GEMV=0) | $(tpot /tmp/q1 $W/m8h.qmb QUAMBA_CUDA_GEMV=0) |" | tee -a $OUT/r/side.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
