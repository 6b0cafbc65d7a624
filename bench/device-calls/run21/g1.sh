#!/usr/bin/env bash
# Session 17, call 1: int8 cached SSM states (the quantize_states pass). qs: this session's binary;
# qb: the sixteenth session's final (f3), which only runs f32 states. Checks of qs on the trained
# artifacts compiled here with int8 states (.device/art2) and on 2-layer synthetic W4A8 / W8A8;
# then 16-layer TPOT side by side: qb, qs with --f32-states (the f32 path after the change), qs
# with int8 states; two rounds.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qs=quambac-g1.xz qb=quambac-f3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qs mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 &
COMPILE_FLAGS=--f32-states build_short /tmp/qs mamba2-2.7b:16:m27f mamba-2.8b:16:m28f &
build_short /tmp/qb mamba2-2.7b:16:m27b mamba-2.8b:16:m28b &
TARGET=h100-w8a8 build_short /tmp/qs mamba2-2.7b:2:w27c &
wait
echo "short built at $(elapsed) s" | tee $OUT/r/times.txt
( for a in .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb $W/w27c.qmb; do
    echo "== check $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qs cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
    echo "== check $(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qs cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-400)"
  done
  echo "== check w27c.qmb 1x1 steps 8 (one-token prompt): $(timeout 60 /tmp/qs cuda check $W/w27c.qmb --batch 1 --seq 1 --steps 8 --json 2>&1 | tail -1 | cut -c1-600)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m27 m28; do
  echo "| $m | qb (f3), f32 states | $(tpot /tmp/qb $W/${m}b.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qs, f32 states | $(tpot /tmp/qs $W/${m}f.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qs, int8 states | $(tpot /tmp/qs $W/$m.qmb) |" | tee -a $OUT/r/side.md
done; done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
for m in m27 m27f; do timeout 60 /tmp/qs cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 > $OUT/r/bench-$m.json; done
[ $(elapsed) -lt 420 ] && timeout 30 /tmp/qs cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
[ $(elapsed) -lt 450 ] && { timeout 120 bash bench/gpu_sass.sh /tmp/qs $W/sassout > $OUT/r/sass.txt 2>&1; cp $W/sassout/sass-*.txt $OUT/r/ 2>/dev/null; }
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
