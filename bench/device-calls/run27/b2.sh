#!/usr/bin/env bash
# Session 23, call 2: `quambac-b1` = b0 with products of many rows on `quamba::gemm_tiled`
# (activations staged in shared memory by cp.async, slabs in flight). Checks against the CPU
# reference at 2 x 64 rows (the tiled kernel) with and without it (QUAMBA_CUDA_TILED=0), TTFT of
# 4-layer models side by side, a few tilings, and the new prefill's kernels under Nsight Compute.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q1=quambac-b1.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q1 mamba2-2.7b:4:m27 mamba-2.8b:4:m28 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-8b:2:m8c
for m in m27 m28 m27c m28c m8c; do for t in w4a16 w8a8; do ( timeout 150 /tmp/q1 compile $W/$m --target h100-$t --no-gptq --calib-samples 2 --calib-len 64 -o $W/$m-$t.qmb > $W/$m-$t.log 2>&1 || echo "$t $m failed" ) & done; done
for t in w4a8 w4a16 w8a8; do /tmp/q1 compile --target h100-$t -o $W/tiny-$t.qmb >/dev/null 2>&1 & done; wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in "tiny-fp16:" tiny-w4a8:$W/tiny-w4a8.qmb tiny-w4a16:$W/tiny-w4a16.qmb tiny-w8a8:$W/tiny-w8a8.qmb \
           m27c-fp16:$W/m27c m27c-w4a8:$W/m27c.qmb m27c-w4a16:$W/m27c-w4a16.qmb m27c-w8a8:$W/m27c-w8a8.qmb \
           m28c-fp16:$W/m28c m28c-w4a8:$W/m28c.qmb m28c-w4a16:$W/m28c-w4a16.qmb m8c-w4a8:$W/m8c.qmb m8c-w4a16:$W/m8c-w4a16.qmb \
           shared-m2small:.device/arts/mamba2-small-w4a16.qmb shared-m1small:.device/arts/mamba1-small-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64 tiled: $(timeout 90 /tmp/q1 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
    echo "$n 2x64 untiled: $(QUAMBA_CUDA_TILED=0 timeout 90 /tmp/q1 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
ttft() { env "$@" timeout 60 /tmp/q1 cuda bench $ART --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed; }
echo "| 4 layers, TTFT ms (1024 tokens) | untiled (QUAMBA_CUDA_TILED=0) | tiled | 4x2x4x4 | 2x4x4x4 | 4x4x2x4 | 4x4x4x3 |" > $OUT/r/ttft.md; echo "|---|---|---|---|---|---|---|" >> $OUT/r/ttft.md
for a in m27-fp16:$W/m27 m27-w4a8:$W/m27.qmb m27-w4a16:$W/m27-w4a16.qmb m27-w8a8:$W/m27-w8a8.qmb m28-fp16:$W/m28 m28-w4a8:$W/m28.qmb m28-w4a16:$W/m28-w4a16.qmb; do
  n=${a%%:*}; ART=${a#*:}
  if [ "$(elapsed)" -lt 400 ]; then
    echo "| $n | $(ttft QUAMBA_CUDA_TILED=0) | $(ttft QUAMBA_CUDA_TILED=1) | $(ttft QUAMBA_CUDA_TILED=4x2x4x4) | $(ttft QUAMBA_CUDA_TILED=2x4x4x4) | $(ttft QUAMBA_CUDA_TILED=4x4x2x4) | $(ttft QUAMBA_CUDA_TILED=4x4x4x3) |" | tee -a $OUT/r/ttft.md
  fi
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
for a in m27-fp16:$W/m27 m27-w4a16:$W/m27-w4a16.qmb m27-w4a8:$W/m27.qmb m28-w4a8:$W/m28.qmb; do
  n=${a%%:*}; art=${a#*:}
  [ "$(elapsed)" -lt 500 ] || break
  timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file $OUT/r/ncu-$n.csv /tmp/q1 cuda bench $art --prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1 >/dev/null 2>$OUT/r/ncu-$n.log
  python3 bench/ncu_prefill_table.py $OUT/r/ncu-$n.csv "$n 4L tiled" >> $OUT/r/prefill.md 2>&1
done
rm -f $OUT/r/*.csv
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
