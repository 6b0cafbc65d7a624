#!/usr/bin/env bash
# Session 11, call 1: the first run of `quambac cuda trace`. Tiny artifacts (does the hook
# build, record and assign?), then bench/gpu_trace.sh at real shapes (16-layer 2.7B / 2.8B,
# 8-layer 8B, W4A8), plus the 16-layer 2.7B's `cuda bench` (graph TPOT) to set the trace against.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/card.txt
for a in .device/art/*.qmb; do
  echo "== trace $(basename $a)"; timeout 60 /tmp/qn cuda trace $a --steps 4 --svg $OUT/$(basename $a .qmb).svg 2>&1 | tail -60
done 2>&1 | tee $OUT/tiny.md
echo "tiny done at $(( $(date +%s) - T0 )) s"
WORK=/tmp/quamba-trace timeout 380 bench/gpu_trace.sh /tmp/qn $OUT/trace 2>&1 | tail -5
echo "traces done at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1 --decode-tokens 64 --repeats 5"
for m in mamba2-2.7b-16 mamba-2.8b-16 mamba2-8b-8; do
  [ $(( $(date +%s) - T0 )) -lt 520 ] || break
  f=/tmp/quamba-trace/$m-w4a8.qmb; [ -f $f ] || continue
  echo "== bench $m: $(timeout 40 /tmp/qn cuda bench $f --json $A 2>/dev/null | tail -1 | cut -c1-400)"
done 2>&1 | tee $OUT/bench.txt
[ $(( $(date +%s) - T0 )) -lt 540 ] && timeout 40 /tmp/qn cuda bench /tmp/quamba-trace/mamba2-2.7b-16-w4a8.qmb --profile --prompt-len 16 --batches 1 --decode-tokens 16 --repeats 1 2>&1 | grep -A30 "profile decode" | tee $OUT/profile.txt
echo "end $(( $(date +%s) - T0 )) s"
