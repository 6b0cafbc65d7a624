#!/usr/bin/env bash
# Session 17, call 4: the int8 SSD step's shape. Fewer states per thread (more lanes per state
# row, QUAMBA_CUDA_SSD_SHAPE=LANESxROWS) shortens each thread's dequantize / quantize chain; 16-layer
# mamba2-2.7b TPOT with f32 and int8 states at each shape (g3). Checks, compact: every trained
# artifact (int8 states) and the 2-layer model at the default and the 16x16 shape.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qs=quambac-g3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qs mamba2-2.7b:2:m27c mamba2-2.7b:16:m27 &
COMPILE_FLAGS=--f32-states build_short /tmp/qs mamba2-2.7b:16:m27f &
wait
echo "short built at $(elapsed) s" | tee $OUT/r/times.txt
summary() { python3 -c 'import json,sys
for l in sys.stdin:
    try: j=json.loads(l)
    except Exception: continue
    print("passed=%s max_abs_diff=%.3g tolerance=%s argmax=%.3f greedy=%s/%s" % (j["passed"], j["max_abs_diff"], j["tolerance"], j["argmax_agreement"], j["greedy_matching_prefix"], j["greedy_tokens"]))'; }
( for a in .device/art2/*.qmb $W/m27c.qmb; do
    echo "$(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qs cuda check $a --batch 1 --seq 1 --steps 4 --json 2>/dev/null | tail -1 | summary)"
    echo "$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qs cuda check $a --batch 4 --seq 8 --steps 2 --json 2>/dev/null | tail -1 | summary)"
  done
  for shape in 16x16 32x8; do
    echo "m27c.qmb ssd $shape 1x1 steps 4: $(QUAMBA_CUDA_SSD_SHAPE=$shape timeout 60 /tmp/qs cuda check $W/m27c.qmb --batch 1 --seq 1 --steps 4 --json 2>/dev/null | tail -1 | summary)"
    echo "m27c.qmb ssd $shape 4x8 steps 2: $(QUAMBA_CUDA_SSD_SHAPE=$shape timeout 60 /tmp/qs cuda check $W/m27c.qmb --batch 4 --seq 8 --steps 2 --json 2>/dev/null | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| states | SSD shape (lanes x rows) | TPOT ms (batch 1 / 16) |" > $OUT/r/shapes.md; echo "|---|---|---|" >> $OUT/r/shapes.md
for round in 1 2; do for shape in default 16x16 32x8 16x8; do
  knob=$([ $shape = default ] || echo QUAMBA_CUDA_SSD_SHAPE=$shape)
  echo "| f32 | $shape | $(tpot /tmp/qs $W/m27f.qmb $knob) |" | tee -a $OUT/r/shapes.md
  echo "| int8 | $shape | $(tpot /tmp/qs $W/m27.qmb $knob) |" | tee -a $OUT/r/shapes.md
done; done
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
