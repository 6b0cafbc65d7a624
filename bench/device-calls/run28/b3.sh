#!/usr/bin/env bash
# Session 24, call 3: `quambac-b7` = b6 + the SSD prefill's 16-byte copies (B and C no longer
# converted in the scan), a prefill's split gated-norm chain on one block per row, the prefill
# conv's inverse scales. Checks, 4-layer TTFT b3 against b7, the prefill under Nsight Compute,
# then `bench/gpu.sh` at full size: mamba2-2.7b with FP16, W4A8 and W4A16.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q3=quambac-b3.xz q7=quambac-b7.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q7 mamba2-2.7b:4:m27 mamba-2.8b:4:m28 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c
( timeout 150 /tmp/q7 compile $W/m27 --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27-w4a16.qmb > $W/m27-w4a16.log 2>&1 || echo "w4a16 m27 failed" ) &
( timeout 150 /tmp/q7 compile $W/m27c --target h100-w4a8 --int8-states --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27c-i8.qmb > $W/m27c-i8.log 2>&1 || echo "int8 states m27c failed" ) &
/tmp/q7 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in tiny-w4a8:$W/tiny-w4a8.qmb m27c-fp16:$W/m27c m27c-w4a8:$W/m27c.qmb m27c-w4a8-int8-states:$W/m27c-i8.qmb m28c-w4a8:$W/m28c.qmb m8c-w4a8:$W/m8c.qmb shared-m2small-w4a16:.device/arts/mamba2-small-w4a16.qmb shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64: $(timeout 90 /tmp/q7 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
  done
  echo "m27c-w4a8 1x61: $(timeout 90 /tmp/q7 cuda check $W/m27c.qmb --batch 1 --seq 61 --json 2>&1 | tail -1 | summary)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
ttft() { local bin=$1; shift; env "$@" timeout 60 $bin cuda bench $ART --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed; }
echo "| 4 layers, TTFT ms (1024 tokens) | b3 | b7 |" > $OUT/r/ttft.md; echo "|---|---|---|" >> $OUT/r/ttft.md
for a in m27-w4a8:$W/m27.qmb m27-fp16:$W/m27 m27-w4a16:$W/m27-w4a16.qmb m28-w4a8:$W/m28.qmb m28-fp16:$W/m28; do
  n=${a%%:*}; ART=${a#*:}
  echo "| $n | $(ttft /tmp/q3 X=1) | $(ttft /tmp/q7 X=1) |" | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for cfg in w4a8:$W/m27.qmb fp16:$W/m27; do
  c=${cfg%%:*}; art=${cfg#*:}
  timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-m27-$c.csv /tmp/q7 cuda bench $art $P >/dev/null 2>$OUT/r/ncu-m27-$c.log
  python3 bench/ncu_prefill_table.py $OUT/r/ncu-m27-$c.csv "m27 4L $c b7" >> $OUT/r/prefill.md 2>&1
done
echo "ncu at $(elapsed) s" | tee -a $OUT/r/times.txt
mkdir -p $OUT/r/m27
SKIP_PEER=1 CONFIGS="w4a8 w4a16" BENCH_ARGS="--prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3" \
  OUT=$OUT/r/m27 WORK=$W/work timeout $((590 - $(elapsed))) bash bench/gpu.sh /tmp/q7 mamba2-2.7b > $OUT/r/m27/log.txt 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
