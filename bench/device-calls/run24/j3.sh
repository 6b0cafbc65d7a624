#!/usr/bin/env bash
# Session 20, call 3: `quambac-j3` = the committed code (j2, with the L2 tail only for products
# whose one-row blocks each hold their tiles, at most a quarter of the GPU's L2, default 700
# thousandths). Checks; 16-layer FP16 under j2 at QUAMBA_CUDA_L2_AHEAD 0 and 700 (why FP16 is
# left out); 16-layer W4A8 under j3 at 0 and the default; then full-size mamba2-2.7b and
# mamba-2.8b, W4A8 and our FP16, one bench each.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q3=quambac-j3.xz q2=quambac-j2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/q3 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
build_full_in_background /tmp/q3 mamba2-2.7b mamba-2.8b
( for a in .device/art/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    echo "j3 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/q3 cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done
  for a in $W/m27c.qmb $W/m28c.qmb; do
    echo "j3 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/q3 cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| binary, QUAMBA_CUDA_L2_AHEAD | m27 16L TPOT b=1 / 16 ms | m28 16L |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
echo "| j2 FP16, 0 | $(tpot /tmp/q2 $W/m27 QUAMBA_CUDA_L2_AHEAD=0) | $(tpot /tmp/q2 $W/m28 QUAMBA_CUDA_L2_AHEAD=0) |" | tee -a $OUT/r/side.md
echo "| j2 FP16, 700 | $(tpot /tmp/q2 $W/m27 QUAMBA_CUDA_L2_AHEAD=700) | $(tpot /tmp/q2 $W/m28 QUAMBA_CUDA_L2_AHEAD=700) |" | tee -a $OUT/r/side.md
echo "| j3 FP16, default | $(tpot /tmp/q3 $W/m27) | $(tpot /tmp/q3 $W/m28) |" | tee -a $OUT/r/side.md
for round in 1 2; do
  echo "| j3 W4A8, 0 | $(tpot /tmp/q3 $W/m27.qmb QUAMBA_CUDA_L2_AHEAD=0) | $(tpot /tmp/q3 $W/m28.qmb QUAMBA_CUDA_L2_AHEAD=0) |" | tee -a $OUT/r/side.md
  echo "| j3 W4A8, default | $(tpot /tmp/q3 $W/m27.qmb) | $(tpot /tmp/q3 $W/m28.qmb) |" | tee -a $OUT/r/side.md
done
echo "16L at $(elapsed) s" | tee -a $OUT/r/times.txt
wait
echo "full size built: $(cat $OUT/r/times.txt | tr '\n' ';')"
bench_full /tmp/q3 480 mamba2-2.7b mamba-2.8b
/tmp/q3 cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-j3.md 2>&1
/tmp/q3 cuda trace $W/m28.qmb --steps 3 --events 200000 > $OUT/r/trace-m28-j3.md 2>&1
tail -n 3 $OUT/r/compile-*.log >> $OUT/r/times.txt; rm -f $OUT/r/compile-*.log  # at most 8 files come back
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
