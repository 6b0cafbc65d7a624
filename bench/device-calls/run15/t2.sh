#!/usr/bin/env bash
# Session 11, call 2: the trace with the weights-landed mark, the last block's start and the
# median block's work (and the entry-name fix for mamba2-8b's cluster row kernel): 16-layer
# mamba2-2.7b and mamba-2.8b, 8-layer mamba2-8b at W4A8, 16-layer mamba2-2.7b at W8A8.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/trace
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/trace/card.txt
timeout 60 /tmp/qn cuda trace .device/art/m2t-w4a8.qmb --steps 4 2>&1 | tail -40 > $OUT/trace/m2t-w4a8.md
WORK=/tmp/quamba-trace timeout 480 bench/gpu_trace.sh /tmp/qn $OUT/trace mamba2-2.7b:16:w4a8 mamba-2.8b:16:w4a8 mamba2-8b:8:w4a8 mamba2-2.7b:16:w8a8 2>&1 | grep -v "^|" | tail -8
echo "traces done at $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/trace.tgz trace && rm -rf $OUT/trace
