#!/usr/bin/env bash
# Session 24, call 1: `quambac-b5` = 2ec69ae + the SSD's prefill kernel for f32 states
# (`quamba::ssd_prefill`: R rows a warp, cp.async windows, one transposed sum per window).
# Checks at 2 x 64 and 1 x 61 rows, 4-layer TTFT b3 against b5 and b5's row shapes, then the
# new prefill under Nsight Compute (mamba2-2.7b, 4 layers, FP16 and W4A8).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q3=quambac-b3.xz q5=quambac-b5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q5 mamba2-2.7b:4:m27 mamba2-2.7b:2:m27c mamba2-8b:2:m8c
( timeout 150 /tmp/q5 compile $W/m27 --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27-w4a16.qmb > $W/m27-w4a16.log 2>&1 || echo "w4a16 m27 failed" ) &
/tmp/q5 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in "tiny-fp16:" tiny-w4a8:$W/tiny-w4a8.qmb m27c-fp16:$W/m27c m27c-w4a8:$W/m27c.qmb m8c-w4a8:$W/m8c.qmb shared-m2small-w4a16:.device/arts/mamba2-small-w4a16.qmb shared-m2tiny-w4a16:.device/arts/mamba2-tiny-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64: $(timeout 90 /tmp/q5 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
    echo "$n 1x61: $(timeout 90 /tmp/q5 cuda check $art --batch 1 --seq 61 --json 2>&1 | tail -1 | summary)"
  done
  echo "m27c-w4a8 old kernel 2x64: $(QUAMBA_CUDA_SSD_PREFILL_ROWS=0 timeout 90 /tmp/q5 cuda check $W/m27c.qmb --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
ttft() { local bin=$1; shift; env "$@" timeout 60 $bin cuda bench $ART --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed; }
echo "| 4 layers, TTFT ms (1024 tokens) | b3 | b5 4x2 | b5 2x4 | b5 4x4 | b5 2x2 | b5 1x8 | b5 old (0) |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m27-fp16:$W/m27 m27-w4a8:$W/m27.qmb m27-w4a16:$W/m27-w4a16.qmb; do
  n=${a%%:*}; ART=${a#*:}
  row="| $n | $(ttft /tmp/q3 X=1) |"
  for v in 4x2 2x4 4x4 2x2 1x8 0; do row="$row $(ttft /tmp/q5 QUAMBA_CUDA_SSD_PREFILL_ROWS=$v) |"; done
  echo "$row" | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for cfg in fp16:$W/m27 w4a8:$W/m27.qmb; do
  c=${cfg%%:*}; art=${cfg#*:}
  [ "$(elapsed)" -lt 480 ] || break
  timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-m27-$c.csv /tmp/q5 cuda bench $art $P >/dev/null 2>$OUT/r/ncu-m27-$c.log
  python3 bench/ncu_prefill_table.py $OUT/r/ncu-m27-$c.csv "m27 4L $c b5" >> $OUT/r/prefill.md 2>&1
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
