#!/usr/bin/env bash
# Session 18, call 3: bulk one-row products sum two tiles per warp (`quamba::PairDot`: a chunk's
# activations loaded once for both tiles, two shuffles per group for both), as knobs
# (QUAMBA_CUDA_GEMV_TW=2 everywhere it applies, QUAMBA_CUDA_GEMV_AT per product). Checks against
# the CPU integer reference with TW=2, then 16-layer TPOT side by side with the default layout
# in the same binary, and traces.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qp=quambac-h3.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qp mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 &
TARGET=h100-w8a8 build_short /tmp/qp mamba2-2.7b:16:m27w8 mamba2-2.7b:2:m27w8c &
wait
echo "built at $(elapsed) s" | tee $OUT/r/times.txt
summary() { python3 -c 'import json,sys
for l in sys.stdin:
    try: j=json.loads(l)
    except Exception: print(l.strip()[:160]); continue
    print("passed=%s max_abs_diff=%.3g argmax=%.3f greedy=%s/%s" % (j["passed"], j["max_abs_diff"], j["argmax_agreement"], j["greedy_matching_prefix"], j["greedy_tokens"]))'; }
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb $W/m27w8c.qmb; do
    echo "tw=2 $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(QUAMBA_CUDA_GEMV_TW=2 timeout 60 /tmp/qp cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
    echo "tw=2 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(QUAMBA_CUDA_GEMV_TW=2 timeout 60 /tmp/qp cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| variant | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 | m27 W8A8 |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
row() { local name=$1; shift; echo "| $name | $(tpot /tmp/qp $W/m27.qmb "$@") | $(tpot /tmp/qp $W/m28.qmb "$@") | $(tpot /tmp/qp $W/m27w8.qmb "$@") |" | tee -a $OUT/r/side.md; }
for round in 1 2; do
  row "one tile per warp (round $round)"
  row "TW=2 everywhere" QUAMBA_CUDA_GEMV_TW=2
  row "in_proj 2x4x2 only" "QUAMBA_CUDA_GEMV_AT=2560x10576:2x4x2;2560x10240:2x4x2"
  row "out_proj 1x14x2 only" QUAMBA_CUDA_GEMV_AT=5120x2560:1x14x2
  row "in_proj 2x2x2, out_proj 1x7x2" "QUAMBA_CUDA_GEMV_AT=2560x10576:2x2x2;2560x10240:2x2x2;5120x2560:1x7x2"
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
QUAMBA_CUDA_GEMV_TW=2 /tmp/qp cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-tw2.md 2>&1
/tmp/qp cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-tw1.md 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
