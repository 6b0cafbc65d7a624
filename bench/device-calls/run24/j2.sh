#!/usr/bin/env bash
# Session 20, call 2: `quambac-j2` = j1 plus each scan pulling the tail of the next layer's
# in_proj weight into L2 after its wait (`kernels/src/cuda/ahead.rs`; QUAMBA_CUDA_L2_AHEAD
# thousandths, default 500). Checks, a 16-layer sweep of the knob, traces, then full-size
# mamba2-2.7b and mamba-2.8b: W4A8 at the default and at 0, and our FP16, in one call.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q2=quambac-j2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/q2 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
build_full_in_background /tmp/q2 mamba2-2.7b mamba-2.8b
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    echo "j2 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/q2 cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done
  for a in $W/m27c.qmb $W/m28c.qmb .device/art/mamba2-small-w4a8.qmb; do
    echo "j2 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/q2 cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
    echo "j2 $(basename $(dirname $a))/$(basename $a) 16x1 steps 3: $(timeout 60 /tmp/q2 cuda check $a --batch 16 --seq 1 --steps 3 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| QUAMBA_CUDA_L2_AHEAD | m27 16L W4A8 TPOT b=1 / 16 ms | m28 16L W4A8 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  for v in 0 300 500 700 1000; do
    echo "| $v | $(tpot /tmp/q2 $W/m27.qmb QUAMBA_CUDA_L2_AHEAD=$v) | $(tpot /tmp/q2 $W/m28.qmb QUAMBA_CUDA_L2_AHEAD=$v) |" | tee -a $OUT/r/side.md
  done
done
echo "sweep at $(elapsed) s" | tee -a $OUT/r/times.txt
/tmp/q2 cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-j2.md 2>&1
/tmp/q2 cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28-j2.md 2>&1
wait
echo "full size built: $(cat $OUT/r/times.txt | tr '\n' ';')"
bench_full /tmp/q2 480 mamba2-2.7b mamba-2.8b
[ $(elapsed) -lt 510 ] && QUAMBA_CUDA_L2_AHEAD=0 timeout 75 /tmp/q2 cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8 L2_AHEAD=0" --json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
