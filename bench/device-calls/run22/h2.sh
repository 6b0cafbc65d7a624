#!/usr/bin/env bash
# Session 18, call 2: one-row bulk products sum on the tensor cores (`MmaGroupDot`: one int8
# m16n8k32 mma per 32-k segment in place of two dp4a per lane, no shuffles per group; the same
# int32 group sums, so the same results). Checks against the CPU integer reference (trained
# artifacts, 2-layer real shapes) and 16-layer TPOT side by side with QUAMBA_CUDA_GEMV_MMA=0
# (the dp4a sums) in the same binary; a trace of each.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qm=quambac-h2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qm mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 &
TARGET=h100-w8a8 build_short /tmp/qm mamba2-2.7b:16:m27w8 mamba2-2.7b:2:m27w8c &
wait
echo "built at $(elapsed) s" | tee $OUT/r/times.txt
summary() { python3 -c 'import json,sys
for l in sys.stdin:
    try: j=json.loads(l)
    except Exception: print(l.strip()[:160]); continue
    print("passed=%s max_abs_diff=%.3g argmax=%.3f greedy=%s/%s" % (j["passed"], j["max_abs_diff"], j["argmax_agreement"], j["greedy_matching_prefix"], j["greedy_tokens"]))'; }
( for a in .device/art/*.qmb .device/art2/*.qmb $W/m27c.qmb $W/m28c.qmb $W/m27w8c.qmb; do
    for mma in 1 0; do
      echo "mma=$mma $(basename $(dirname $a))/$(basename $a) 1x1 steps 4: $(QUAMBA_CUDA_GEMV_MMA=$mma timeout 60 /tmp/qm cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
    done
    echo "mma=1 $(basename $(dirname $a))/$(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qm cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done ) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| variant | m27 W4A8 TPOT b=1 / 16 ms | m28 W4A8 | m27 W8A8 |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
row() { local name=$1; shift; echo "| $name | $(tpot /tmp/qm $W/m27.qmb "$@") | $(tpot /tmp/qm $W/m28.qmb "$@") | $(tpot /tmp/qm $W/m27w8.qmb "$@") |" | tee -a $OUT/r/side.md; }
for round in 1 2; do
  row "dp4a sums (round $round)" QUAMBA_CUDA_GEMV_MMA=0
  row "mma sums (round $round)" QUAMBA_CUDA_GEMV_MMA=1
done
echo "tpot at $(elapsed) s" | tee -a $OUT/r/times.txt
/tmp/qm cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-mma.md 2>&1
QUAMBA_CUDA_GEMV_MMA=0 /tmp/qm cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-dp4a.md 2>&1
/tmp/qm cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28-mma.md 2>&1
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
