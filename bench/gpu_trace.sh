#!/usr/bin/env bash
# A decode step's timeline from the blocks' own clocks (`quambac cuda trace`), for shortened
# models at the real shapes, in one device call:
#   bench/gpu_trace.sh QUAMBAC OUTDIR [LIKE:LAYERS:CONFIG ...]
# default mamba2-2.7b:16:w4a8 mamba-2.8b:16:w4a8 mamba2-8b:8:w4a8. Each model is synthesized with an
# 8192-token vocabulary (so the step is its layers rather than the head), compiled (CONFIG w8a8,
# w4a8, w4a16; fp16: the checkpoint), and traced for 4 steps at batch 1: OUTDIR gets the table
# (NAME.md), the per-launch means (NAME.json) and the last step's timeline (NAME.svg).
set -uo pipefail
Q=$1; out=$2; shift 2
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(mamba2-2.7b:16:w4a8 mamba-2.8b:16:w4a8 mamba2-8b:8:w4a8)
WORK=${WORK:-/tmp/quamba-trace}
mkdir -p "$WORK" "$out"
for spec in "${specs[@]}"; do
  IFS=: read -r like layers cfg <<< "$spec"
  dir=$WORK/$like-$layers
  [ -f "$dir/config.json" ] || "$Q" synth --like "$like" --layers "$layers" --vocab 8192 -o "$dir" >/dev/null || continue
  m=$dir
  if [ "$cfg" != fp16 ]; then
    m=$WORK/$like-$layers-$cfg.qmb
    [ -f "$m" ] || "$Q" compile "$dir" --target "h100-$cfg" --no-gptq --calib-samples 2 --calib-len 64 -o "$m" >/dev/null 2>&1 || continue
  fi
  name=$like-${layers}L-$cfg
  "$Q" cuda trace "$m" --steps 4 --svg "$out/$name.svg" | tee "$out/$name.md"
  "$Q" cuda trace "$m" --steps 4 --json > "$out/$name.json"
done
