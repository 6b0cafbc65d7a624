#!/usr/bin/env bash
# Session 23, call 1: `quambac-b0` = 148e2f7 (the session start). Where a 1024-token prefill goes,
# kernel by kernel (Nsight Compute durations), for 4-layer mamba2-2.7b and mamba-2.8b in our FP16,
# W4A8 and W4A16; then the session start's 16-layer TPOT (W4A8, W4A16) re-timed.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-b0.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q0 mamba2-2.7b:4:m27 mamba-2.8b:4:m28 mamba2-2.7b:16:m27l mamba-2.8b:16:m28l
for m in m27 m28 m27l m28l; do ( timeout 150 /tmp/q0 compile $W/$m --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$m-h.qmb > $W/$m-h.log 2>&1 || echo "w4a16 $m failed" ) & done; wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for m in m27 m28; do
  for cfg in fp16:$W/$m w4a8:$W/$m.qmb w4a16:$W/$m-h.qmb; do
    c=${cfg%%:*}; art=${cfg#*:}
    timeout 60 /tmp/q0 cuda bench $art --label "$m-4L $c" --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 >> $OUT/r/ttft.jsonl
    timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-$m-$c.csv /tmp/q0 cuda bench $art $P >/dev/null 2>$OUT/r/ncu-$m-$c.log
    python3 bench/ncu_prefill_table.py $OUT/r/ncu-$m-$c.csv "$m 4L $c" >> $OUT/r/prefill.md 2>&1
    echo "$m $c at $(elapsed) s" | tee -a $OUT/r/times.txt
  done
done
echo "| 16 layers | m27 TPOT b=1 / 16 ms | m28 |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do
  echo "| W4A8 (round $round) | $(tpot /tmp/q0 $W/m27l.qmb) | $(tpot /tmp/q0 $W/m28l.qmb) |" | tee -a $OUT/r/side.md
  echo "| W4A16 (round $round) | $(tpot /tmp/q0 $W/m27l-h.qmb) | $(tpot /tmp/q0 $W/m28l-h.qmb) |" | tee -a $OUT/r/side.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
