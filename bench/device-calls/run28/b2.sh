#!/usr/bin/env bash
# Session 24, call 2: `quambac-b6` = b5 + B and C fake-quantized once, in place, before the SSD
# prefill (`fake_quantize_bc`; b5's blocks each converted all of them), default 4 x 4 rows.
# Checks, 4-layer TTFT b3 against b6's row shapes, the prefill under Nsight Compute.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q3=quambac-b3.xz q6=quambac-b6.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q6 mamba2-2.7b:4:m27 mamba2-2.7b:2:m27c mamba2-8b:2:m8c
( timeout 150 /tmp/q6 compile $W/m27 --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27-w4a16.qmb > $W/m27-w4a16.log 2>&1 || echo "w4a16 m27 failed" ) &
( timeout 150 /tmp/q6 compile $W/m27c --target h100-w4a8 --int8-states --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27c-i8.qmb > $W/m27c-i8.log 2>&1 || echo "int8 states m27c failed" ) &
/tmp/q6 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in tiny-w4a8:$W/tiny-w4a8.qmb m27c-fp16:$W/m27c m27c-w4a8:$W/m27c.qmb m27c-w4a8-int8-states:$W/m27c-i8.qmb m8c-w4a8:$W/m8c.qmb shared-m2small-w4a16:.device/arts/mamba2-small-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64: $(timeout 90 /tmp/q6 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
  done
  echo "m27c-w4a8 1x61: $(timeout 90 /tmp/q6 cuda check $W/m27c.qmb --batch 1 --seq 61 --json 2>&1 | tail -1 | summary)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
ttft() { local bin=$1; shift; env "$@" timeout 60 $bin cuda bench $ART --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed; }
echo "| 4 layers, TTFT ms (1024 tokens) | b3 | b6 4x4 | b6 4x8 | b6 2x8 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m27-w4a8:$W/m27.qmb m27-fp16:$W/m27 m27-w4a16:$W/m27-w4a16.qmb; do
  n=${a%%:*}; ART=${a#*:}
  row="| $n | $(ttft /tmp/q3 X=1) |"
  for v in 4x4 4x8 2x8; do row="$row $(ttft /tmp/q6 QUAMBA_CUDA_SSD_PREFILL_ROWS=$v) |"; done
  echo "$row" | tee -a $OUT/r/ttft.md
  echo "ttft $n at $(elapsed) s" | tee -a $OUT/r/times.txt
done
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for cfg in w4a8:$W/m27.qmb fp16:$W/m27; do
  c=${cfg%%:*}; art=${cfg#*:}
  [ "$(elapsed)" -lt 500 ] || break
  timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-m27-$c.csv /tmp/q6 cuda bench $art $P >/dev/null 2>$OUT/r/ncu-m27-$c.log
  python3 bench/ncu_prefill_table.py $OUT/r/ncu-m27-$c.csv "m27 4L $c b6" >> $OUT/r/prefill.md 2>&1
done
[ "$(elapsed)" -lt 530 ] && timeout 60 ncu --clock-control none -k regex:'^ssd_[0-9]' --launch-count 1 --section SchedulerStats --section WarpStateStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section SpeedOfLight /tmp/q6 cuda bench $W/m27.qmb $P > $OUT/r/ncu-ssd-detail.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
