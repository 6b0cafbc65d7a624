#!/usr/bin/env bash
# The persistent decode-step feasibility measurement (bench/persistent_step.cu) on the device:
# builds it with the device's nvcc for its card and prints the table.
# usage: bench/persistent_step.sh [LAYERS] [OUT_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
nvcc -O3 -std=c++17 -arch=sm_"$cc" -o /tmp/persistent_step bench/persistent_step.cu
/tmp/persistent_step "${1:-64}" | tee "${2:-/dev/null}"
