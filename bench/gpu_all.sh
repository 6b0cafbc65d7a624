#!/usr/bin/env bash
# The GPU path in one device call, correctness first, then speed:
#   bench/gpu_all.sh QUAMBAC [LIKE...]      (LIKE defaults to: mamba2-2.7b mamba-2.8b)
# QUAMBAC is a release build of this repository's `quambac` (the device has no Rust toolchain:
# `cargo build --release -p quamba-compiler` here, then carry the binary).
#  1. `quambac cuda check` on the embedded mamba2-tiny: the checkpoint, and its W8A8 / W4A8 /
#     W4A16 artifacts at 1 × 1 rows (batch-1 decode kernels) and 2 × 64 rows (prefill kernels),
#     then bench/gpu_check.sh on every model directory in $MODELS (space-separated, optional);
#  1b. bench/gpu_sass.sh: the device's ptxas on the real-shape kernels (reported, not fatal);
#  2. bench/gpu.sh on each LIKE: FP16 and $CONFIGS side by side (skipped if a check failed).
# JSON lines go to $OUT (default bench/out): check.jsonl, gpu.jsonl; the table is printed last.
set -uo pipefail
Q=$1; shift
likes=("$@")
[ ${#likes[@]} -eq 0 ] && likes=(mamba2-2.7b mamba-2.8b)
OUT=${OUT:-bench/out}
here=$(dirname "$0")
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/card.txt"
fail=0
"$Q" cuda check --json | tee -a "$OUT/check.jsonl" || fail=1
for t in w8a8 w4a8 w4a16; do
  a=$OUT/tiny-$t.qmb
  "$Q" compile --target "h100-$t" -o "$a" >/dev/null 2>&1 || { echo "compiling the tiny model for $t failed"; fail=1; continue; }
  for shape in "1 1" "2 64"; do
    read -r batch seq <<< "$shape"
    "$Q" cuda check "$a" --batch "$batch" --seq "$seq" --json | tee -a "$OUT/check.jsonl" || fail=1
  done
done
if [ -n "${MODELS:-}" ]; then
  # shellcheck disable=SC2086
  bash "$here/gpu_check.sh" "$Q" "$OUT" $MODELS || fail=1
fi
# The device's ptxas on the kernels at the real shapes: a load used before a wait is a stall,
# not a wrong result, so it is reported here and does not hold back the timings.
bash "$here/gpu_sass.sh" "$Q" "$OUT" || echo "a kernel uses a load before its dependency wait (above)"
if [ $fail -ne 0 ]; then
  echo "a correctness check failed: no timings"
  exit 1
fi
OUT=$OUT bash "$here/gpu.sh" "$Q" "${likes[@]}"
