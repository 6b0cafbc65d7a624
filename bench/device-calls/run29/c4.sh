#!/usr/bin/env bash
# Session 25, call 4: `quambac-c4` = c2 (committed f8f7f5d) + the sequence conv requesting a
# window's inputs before converting any (a quantized input's loads had gone one round trip at a
# time). Checks (the tiny model's W4A8 bit-exact; 2-layer mamba-2.8b / mamba2-2.7b W4A8), 4-layer
# TTFT c2 against c4 (two rounds), the conv under Nsight Compute.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q2=quambac-c2.xz q4=quambac-c4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q4 mamba-2.8b:4:m28 mamba-2.8b:2:m28c mamba2-2.7b:4:m27 mamba2-2.7b:2:m27c &
/tmp/q4 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
check_models /tmp/q4 tiny-w4a8:$W/tiny-w4a8.qmb m28c-w4a8:$W/m28c.qmb m27c-w4a8:$W/m27c.qmb m28c-fp16:$W/m28c 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| 4 layers, TTFT ms (1024 tokens) | c2 | c4 | c2 | c4 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m28-w4a8:$W/m28.qmb m27-w4a8:$W/m27.qmb m28-fp16:$W/m28; do
  ttft_row "${a%%:*}" "${a#*:}" /tmp/q2 /tmp/q4 /tmp/q2 /tmp/q4 | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
P="--prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1"
for q in q2 q4; do for m in m28 m27; do
  [ "$(elapsed)" -lt 380 ] && timeout 50 ncu --clock-control none -k regex:'^conv_[0-9]' --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-conv-$m-$q.csv /tmp/$q cuda bench $W/$m.qmb $P >/dev/null 2>&1
done; done
echo "ncu at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
pack_results
