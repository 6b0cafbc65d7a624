#!/usr/bin/env bash
# Where a decode step's time goes, per kernel, on the device (one call):
#   bench/gpu_profile.sh QUAMBAC LIKE LAYERS CONFIG...    e.g. bench/gpu_profile.sh ./quambac mamba2-2.7b 16 fp16 w4a8
# Synthesizes LIKE with LAYERS layers (same per-layer shapes, loads in a fraction of the time),
# compiles each quantized CONFIG (w8a8 w4a8 w4a16; fp16 = the checkpoint itself), times the
# graph-replayed decode step, then runs a few steps under Nsight Compute (kernel durations without
# event overhead) and prints one decode step's kernels: the gap between their sum and the
# replayed step is launch latency. JSON lines go to $OUT/prof.jsonl.
set -uo pipefail
Q=$1; like=$2; layers=$3; shift 3
OUT=${OUT:-bench/out}
WORK=${WORK:-/tmp/quamba-prof}
here=$(dirname "$0")
mkdir -p "$OUT" "$WORK"
dir=$WORK/$like-$layers
[ -f "$dir/model.safetensors" ] || "$Q" synth --like "$like" --layers "$layers" -o "$dir" || exit 1
pids=()
for cfg in "$@"; do
  [ "$cfg" = fp16 ] && continue
  m=$WORK/$like-$layers-$cfg.qmb
  [ -f "$m" ] || { "$Q" compile "$dir" --target "h100-$cfg" --no-gptq --calib-samples 2 --calib-len 128 -o "$m" >"$OUT/compile-$like-$cfg.log" 2>&1 & pids+=($!); }
done
for cfg in "$@"; do
  m=$dir
  if [ "$cfg" != fp16 ]; then
    m=$WORK/$like-$layers-$cfg.qmb
    for pid in "${pids[@]}"; do wait "$pid"; done; pids=()
  fi
  label="$like-${layers}L $cfg"
  "$Q" cuda bench "$m" --label "$label" --json --prompt-len 64 --batches 1,16 --decode-tokens 64 --repeats 3 | tee -a "$OUT/prof.jsonl"
  if command -v ncu >/dev/null; then
    ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file "$OUT/ncu-$like-$cfg.csv" \
      "$Q" cuda bench "$m" --prompt-len 16 --batches 1 --decode-tokens 3 --repeats 2 >/dev/null 2>"$OUT/ncu-$like-$cfg.log"
    python3 "$here/ncu_table.py" "$OUT/ncu-$like-$cfg.csv" "$label" "$OUT/prof.jsonl"
  fi
done
