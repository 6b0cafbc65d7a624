#!/usr/bin/env bash
# Session 13, call 5: full-size mamba-2.8b W4A8 with the final binary (qn, call 4's), which call 3
# could not time (its binary's prefill scan was since reverted). mamba2-2.7b's kernels are the
# same in both binaries (identical generated entry points), so call 3 stands for it.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-c5.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
/tmp/qn synth --like mamba-2.8b -o $W/mamba-2.8b >/dev/null
timeout 150 /tmp/qn compile $W/mamba-2.8b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba-2.8b-w4a8.qmb > $OUT/r/compile.log 2>&1
echo "compiled at $(( $(date +%s) - T0 )) s"
timeout 120 /tmp/qn cuda bench $W/mamba-2.8b-w4a8.qmb --label "mamba-2.8b w4a8" --json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
