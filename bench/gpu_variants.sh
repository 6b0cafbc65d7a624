#!/usr/bin/env bash
# Side-by-side decode timings of kernel variants selected by environment knobs, in one device call:
#   bench/gpu_variants.sh QUAMBAC "VARIANT..." MODEL...
# Each VARIANT is a comma-separated list of NAME=VALUE settings (or `-` for none), e.g.
#   bench/gpu_variants.sh ./quambac "- QUAMBA_CUDA_STAGE_A=0 QUAMBA_CUDA_CARVEOUT=default" m27 m27.qmb
# Knobs: QUAMBA_CUDA_STAGE_A (0: no activation staging, 1: every kind), QUAMBA_CUDA_CARVEOUT
# (default: the driver's per-kernel split, or a percentage), QUAMBA_CUDA_PDL=0, QUAMBA_CUDA_ROW_SPLIT=0, QUAMBA_CUDA_ROW_TRIGGER=exit,
# QUAMBA_CUDA_DECODE=WARPS,DEPTH (not through this script: commas split settings), QUAMBA_CUDA_GEMV=0 or
# WARPSxDEPTHxCHUNKS (the one-row int8 product). Two rounds, models and variants interleaved; TPOT in ms.
set -uo pipefail
Q=$1; variants=$2; shift 2
args=${BENCH_ARGS:-"--prompt-len 64 --batches 1,16 --decode-tokens 64 --repeats 5"}
tpot() {
  # shellcheck disable=SC2086
  "$@" --json $args 2>/dev/null | tail -n 1 | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); t=j["tpot_ms"]; print(" / ".join("%.4f" % t[b] for b in sorted(t, key=int)), "| carveout", j.get("shared_carveout_percent"))'
}
echo "| round | model | variant | TPOT ms (batches $(echo "$args" | sed -n 's/.*--batches \([^ ]*\).*/\1/p')) |"
echo "|---|---|---|---|"
for round in 1 2; do
  for m in "$@"; do
    for v in $variants; do
      settings=()
      [ "$v" != "-" ] && IFS=, read -r -a settings <<< "$v"
      echo "| $round | $(basename "$m") | $v | $(env "${settings[@]}" bash -c "$(declare -f tpot); args='$args'; tpot $Q cuda bench $m") |"
    done
  done
done
