#!/usr/bin/env bash
# One-row decode product microbenchmark (bench/gemv_micro.cu) on the device: builds it with the
# device's nvcc for its card and prints the table. usage: bench/gemv_micro.sh [OUT_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
nvcc -O3 -std=c++17 -arch=sm_"$cc" -o /tmp/gemv_micro bench/gemv_micro.cu
/tmp/gemv_micro | tee "${1:-/dev/null}"
