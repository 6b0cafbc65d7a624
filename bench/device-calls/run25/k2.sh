#!/usr/bin/env bash
# Session 21, calls 2-4: the persistent decode-step measurement with the avoidable round trips taken
# out (norm weights travel with the slabs, the SSD constants before the wait, the SSD inputs
# loaded together, a release-reduction barrier) and a timeline of its middle layer; 64 layers.
# Call 3 ran it again with the split products (row groups x slices of the row, activations held
# in registers) and a finer timeline, writing persistent-step-split-64L.md; call 4 (NAME=
# persistent-step-issue-64L.md) with the next slabs handed to the copy engine by the last warp
# right after the dot products instead of by the barrier thread after arriving.
set -uo pipefail
source bench/device-calls/common.sh
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
bench/persistent_step.sh 64 $OUT/r/${NAME:-persistent-step-split-64L.md} 2>&1 | tail -30
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
