#!/usr/bin/env bash
# Correctness of the CUDA backend against the CPU executors (FP32 for a checkpoint, the integer
# reference for an artifact), for every model given and each quantized config.
# usage: bench/gpu_check.sh QUAMBAC OUT_DIR MODEL_DIR...   (appends JSON lines to OUT_DIR/check.jsonl)
set -uo pipefail
Q=$1; OUT=$2; shift 2
mkdir -p "$OUT"
fail=0
for m in "$@"; do
  name=$(basename "$m")
  "$Q" cuda check "$m" --json | tee -a "$OUT/check.jsonl" || fail=1
  for t in w8a8 w4a8 w4a16; do
    if ! "$Q" compile "$m" --target "h100-$t" --calib-samples 8 --calib-len 256 -o "$OUT/$name-$t.qmb" >"$OUT/compile-$name-$t.log" 2>&1; then
      echo "compile $name $t failed: $(tail -1 "$OUT/compile-$name-$t.log")"; fail=1; continue
    fi
    "$Q" cuda check "$OUT/$name-$t.qmb" --json | tee -a "$OUT/check.jsonl" || fail=1
  done
done
exit $fail
