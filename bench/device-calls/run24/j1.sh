#!/usr/bin/env bash
# Session 20, call 1: the SSD decode step's own short path (`quambac-j1`) beside the session-start
# kernels (`quambac-j0`). Checks against the CPU integer reference (trained artifacts, f32 and
# int8 states; 2-layer real-shape mamba2-2.7b at one row and at 4 x 8, which runs the batched
# step and the prefill windows), 16-layer TPOT and TTFT side by side, and a trace.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-j0.xz q1=quambac-j1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/q1 mamba2-2.7b:2:m27c mamba2-2.7b:16:m27
echo "short models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb; do
    echo "j1 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/q1 cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  done
  for a in $W/m27c.qmb .device/art/mamba2-small-w4a8.qmb .device/art2/mamba2-tiny-w4a8.qmb; do
    echo "j1 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/q1 cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
    echo "j1 $(basename $(dirname $a))/$(basename $a) 16x1 steps 3: $(timeout 60 /tmp/q1 cuda check $a --batch 16 --seq 1 --steps 3 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| binary | m27 16L W4A8 TPOT b=1 / 16 ms |" > $OUT/r/side.md; echo "|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  echo "| j0 (session start) | $(tpot /tmp/q0 $W/m27.qmb) |" | tee -a $OUT/r/side.md
  echo "| j1 (SSD step path) | $(tpot /tmp/q1 $W/m27.qmb) |" | tee -a $OUT/r/side.md
done
ttft() { timeout 90 $1 cuda bench $W/m27.qmb --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("%.3f" % j["ttft_ms"])' 2>/dev/null || echo failed; }
for round in 1 2; do echo "TTFT 1024 m27 16L: j0 $(ttft /tmp/q0) ms, j1 $(ttft /tmp/q1) ms" | tee -a $OUT/r/side.md; done
/tmp/q1 cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-j1.md 2>&1
/tmp/q0 cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-j0.md 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
