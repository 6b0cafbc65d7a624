#!/usr/bin/env bash
# The CUDA benchmark (issue 5), meant to run in one device call:
#   bench/gpu.sh QUAMBAC LIKE...        e.g. bench/gpu.sh ./quambac mamba2-2.7b mamba-2.8b
# For each public model shape: synthesize random f16 weights at that shape (timing only), compile
# W8A8 / W4A8 / W4A16 with Quamba2 (round-to-nearest 4-bit weights and a short calibration: speed
# does not depend on the values), then time our FP16 baseline, each config and the transformers
# FP16 implementation on the same card. JSON lines go to $OUT/gpu.jsonl (OUT defaults to
# bench/out); the table is printed last (bench/gpu_report.py).
set -uo pipefail
Q=$1; shift
OUT=${OUT:-bench/out}
WORK=${WORK:-/tmp/quamba-gpu}
CONFIGS=${CONFIGS:-"w8a8 w4a8 w4a16"}
BENCH_ARGS=${BENCH_ARGS:-"--prompt-len 1024 --batches 1,16 --decode-tokens 128 --repeats 5"}
mkdir -p "$OUT" "$WORK"
here=$(dirname "$0")
for like in "$@"; do
  dir=$WORK/$like
  [ -f "$dir/model.safetensors" ] || "$Q" synth --like "$like" -o "$dir" || exit 1
  # The CPU compiles run while the GPU times the FP16 baseline and the peer.
  pids=()
  for t in $CONFIGS; do
    if [ ! -f "$WORK/$like-$t.qmb" ]; then
      "$Q" compile "$dir" --target "h100-$t" --no-gptq --calib-samples 2 --calib-len 128 \
        -o "$WORK/$like-$t.qmb" >"$OUT/compile-$like-$t.log" 2>&1 &
      pids+=($!)
    fi
  done
  # shellcheck disable=SC2086
  "$Q" cuda bench "$dir" --label "$like fp16" --json $BENCH_ARGS | tee -a "$OUT/gpu.jsonl"
  for pid in "${pids[@]}"; do wait "$pid"; done
  # The peer is host-bound (eager PyTorch): time it with the CPUs idle.
  if [ -z "${SKIP_PEER:-}" ]; then
    python3 "$here/gpu_transformers.py" "$dir" --label "$like transformers-fp16" 2>"$OUT/peer-$like.log" | tee -a "$OUT/gpu.jsonl"
  fi
  for t in $CONFIGS; do
    # shellcheck disable=SC2086
    "$Q" cuda bench "$WORK/$like-$t.qmb" --label "$like $t" --json $BENCH_ARGS | tee -a "$OUT/gpu.jsonl"
  done
done
python3 "$here/gpu_report.py" "$OUT/gpu.jsonl"
