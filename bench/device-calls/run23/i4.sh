#!/usr/bin/env bash
# Session 19, call 4: the decode steps request every input of a step before converting any
# (`quambac-i4`: Mamba2's SSD step and Mamba1's step copy B, C, x, Δ / dt_proj's input and z raw
# into shared memory with cp.async, then fake-quantize them; one L2 round trip instead of one per
# operand; the SSD step is held to 64 registers). Checks against the CPU integer reference (f32
# and int8 states, one row and 4 × 8), 16-layer TPOT beside i3 (the previous commit), a trace,
# then full size where the 16-layer numbers improved.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-i4.xz qo=quambac-i3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
build_full_in_background /tmp/qn mamba2-2.7b mamba-2.8b
echo "| binary | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
row() { local name=$1 bin=$2; shift 2; echo "| $name | $(tpot $bin $W/m27.qmb "$@") | $(tpot $bin $W/m28.qmb "$@") |" | tee -a $OUT/r/side.md; }
row "i3 (previous commit), round 1" /tmp/qo
row "i4 (inputs requested together), round 1" /tmp/qn
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb; do
    echo "i4 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done
  for a in $W/m27c.qmb $W/m28c.qmb .device/art/mamba2-small-w4a8.qmb .device/art2/mamba2-tiny-w4a8.qmb .device/art2/mamba1-tiny-ss-w4a8.qmb; do
    echo "i4 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
row "i3 (previous commit), round 2" /tmp/qo
row "i4 (inputs requested together), round 2" /tmp/qn
/tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-i4.md 2>&1
wait
echo "full size built: $(cat $OUT/r/times.txt | tr '\n' ';')"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
for m in mamba2-2.7b mamba-2.8b; do
  [ $(elapsed) -lt 300 ] && timeout 75 /tmp/qn cuda bench $W/$m-w4a8.qmb --label "$m w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  [ $(elapsed) -lt 340 ] && timeout 90 /tmp/qn cuda bench $W/$m --label "$m fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
  echo "$m benched at $(elapsed) s" | tee -a $OUT/r/times.txt
done
