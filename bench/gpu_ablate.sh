#!/usr/bin/env bash
# In-graph cost of each kernel family of a decode step (one device call): times the graph-replayed
# step of MODEL as is, without programmatic dependent launch, and with each family left out
# (QUAMBA_CUDA_SKIP; the numbers are wrong then, only the time counts). The difference to the
# full step is what that family costs inside the graph, launch latency included, which Nsight
# Compute's per-kernel durations (serialized, cold caches) do not show.
#   bench/gpu_ablate.sh QUAMBAC MODEL [FAMILY...]    e.g. ... model.qmb rows_1 gemm_2 conv ssd rows_8 gemm_9
set -uo pipefail
Q=$1; m=$2; shift 2
args="--prompt-len 64 --batches 1 --decode-tokens 64 --repeats 5"
tpot() { "$@" 2>/dev/null | python3 -c 'import json,sys; print("%.4f" % json.loads(sys.stdin.read().strip().splitlines()[-1])["tpot_ms"]["1"])'; }
# shellcheck disable=SC2086
full=$(tpot "$Q" cuda bench "$m" --json $args)
# shellcheck disable=SC2086
nopdl=$(QUAMBA_CUDA_PDL=0 tpot "$Q" cuda bench "$m" --json $args)
echo "| $(basename "$m") | step ms | Δ vs full |"
echo "|---|---|---|"
echo "| full | $full | — |"
echo "| without dependent launch | $nopdl | $(python3 -c "print('%+.4f' % ($nopdl - $full))") |"
for fam in "$@"; do
  # shellcheck disable=SC2086
  t=$(QUAMBA_CUDA_SKIP=$fam tpot "$Q" cuda bench "$m" --json $args)
  echo "| without $fam | $t | $(python3 -c "print('%+.4f' % ($t - $full))") |"
done
