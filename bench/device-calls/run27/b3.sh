#!/usr/bin/env bash
# Session 23, call 3: `quambac-b2` = b1 + the scans' prefill kernels of their own (the next 8
# steps' inputs requested ahead, inputs fake-quantized with inverse scales). Checks at 2 x 64 rows,
# then TTFT of 4-layer models: the session start (b0) against b2 on the same artifacts, and
# b2's prefill shapes of the SSD (Mamba2), the selective scan (Mamba1) and the tiled products.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries q0=quambac-b0.xz q2=quambac-b2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
TARGET=h100-w4a8 build_short /tmp/q2 mamba2-2.7b:4:m27 mamba-2.8b:4:m28 mamba2-2.7b:2:m27c mamba-2.8b:2:m28c
for m in m27 m28; do ( timeout 150 /tmp/q2 compile $W/$m --target h100-w4a16 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$m-w4a16.qmb > $W/$m-w4a16.log 2>&1 || echo "w4a16 $m failed" ) & done
/tmp/q2 compile --target h100-w4a8 -o $W/tiny-w4a8.qmb >/dev/null 2>&1 & wait
echo "models built at $(elapsed) s" | tee -a $OUT/r/times.txt
( for a in "tiny-fp16:" tiny-w4a8:$W/tiny-w4a8.qmb m27c-fp16:$W/m27c m27c-w4a8:$W/m27c.qmb m28c-fp16:$W/m28c m28c-w4a8:$W/m28c.qmb shared-m1small-w4a16:.device/arts/mamba1-small-w4a16.qmb shared-m2small-w4a16:.device/arts/mamba2-small-w4a16.qmb; do
    n=${a%%:*}; art=${a#*:}
    echo "$n 2x64: $(timeout 90 /tmp/q2 cuda check $art --batch 2 --seq 64 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
ttft() { local bin=$1; shift; env "$@" timeout 60 $bin cuda bench $ART --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed; }
echo "| 4 layers, TTFT ms (1024 tokens) | session start (b0) | b2 |" > $OUT/r/ttft.md; echo "|---|---|---|" >> $OUT/r/ttft.md
for a in m27-fp16:$W/m27 m27-w4a8:$W/m27.qmb m27-w4a16:$W/m27-w4a16.qmb m28-fp16:$W/m28 m28-w4a8:$W/m28.qmb m28-w4a16:$W/m28-w4a16.qmb; do
  n=${a%%:*}; ART=${a#*:}
  echo "| $n | $(ttft /tmp/q0 X=1) | $(ttft /tmp/q2 X=1) |" | tee -a $OUT/r/ttft.md
done
echo "ttft at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| knob | value | TTFT ms |" > $OUT/r/shapes.md; echo "|---|---|---|" >> $OUT/r/shapes.md
ART=$W/m27.qmb
for v in 16x16 16x32 32x8 4x64; do [ "$(elapsed)" -lt 480 ] && echo "| m27-w4a8 QUAMBA_CUDA_SSD_PREFILL_SHAPE | $v | $(ttft /tmp/q2 QUAMBA_CUDA_SSD_PREFILL_SHAPE=$v) |" | tee -a $OUT/r/shapes.md; done
ART=$W/m28.qmb
for v in 32x4 64x2 32x1 16x8; do [ "$(elapsed)" -lt 500 ] && echo "| m28-w4a8 QUAMBA_CUDA_SCAN_PREFILL_SHAPE | $v | $(ttft /tmp/q2 QUAMBA_CUDA_SCAN_PREFILL_SHAPE=$v) |" | tee -a $OUT/r/shapes.md; done
for a in m27-fp16:$W/m27 m27-w4a16:$W/m27-w4a16.qmb m27-w4a8:$W/m27.qmb; do
  n=${a%%:*}; ART=${a#*:}
  [ "$(elapsed)" -lt 530 ] && echo "| $n QUAMBA_CUDA_TILED | 2x4x4x4 | $(ttft /tmp/q2 QUAMBA_CUDA_TILED=2x4x4x4) |" | tee -a $OUT/r/shapes.md
done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
