#!/usr/bin/env bash
# Session 19, call 3: the committed kernels (`quambac-i3`: i2 with the scale's inverse taken
# after the dependency wait, which tests/cuda_sass.rs required). Checks against the CPU integer
# reference, 16-layer TPOT beside i2, then full-size mamba2-2.7b and mamba-2.8b, W4A8 and our
# FP16, one bench each. Results are written as they come.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-i3.xz q2=quambac-i2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
# The full-size compiles run beside the checks (build_short's wait would otherwise wait for them).
build_full_in_background /tmp/qn mamba2-2.7b mamba-2.8b
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    echo "i3 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done
  for a in $W/m27c.qmb $W/m28c.qmb .device/art/mamba2-small-w4a8.qmb; do
    echo "i3 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| binary | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
row() { local name=$1 bin=$2; shift 2; echo "| $name | $(tpot $bin $W/m27.qmb "$@") | $(tpot $bin $W/m28.qmb "$@") |" | tee -a $OUT/r/side.md; }
row "i2 (inverse before the wait)" /tmp/q2
row "i3 (committed)" /tmp/qn
wait
echo "full size built: $(cat $OUT/r/times.txt | tr '\n' ';')"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
for m in mamba2-2.7b mamba-2.8b; do
  [ $(elapsed) -lt 470 ] && timeout 75 /tmp/qn cuda bench $W/$m-w4a8.qmb --label "$m w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  [ $(elapsed) -lt 500 ] && timeout 90 /tmp/qn cuda bench $W/$m --label "$m fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  echo "$m benched at $(elapsed) s" | tee -a $OUT/r/times.txt
done
