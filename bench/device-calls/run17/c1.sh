#!/usr/bin/env bash
# Session 13, call 1: Mamba2's gated norm -> Hadamard -> quantize over a cluster of its norm
# group's blocks (qn, default) against every block summing the whole group
# (QUAMBA_CUDA_CLUSTER=0, the session-start rule for mamba2-2.7b). Checks against the integer
# reference (trained tiny / small models and 2-layer real shapes, both rules), TPOT side by side
# (16-layer mamba2-2.7b W4A8, two rounds), traces with the scans' new marks, and Nsight Compute
# warp-state statistics of one layer's decode kernels (2-layer mamba2-2.7b W4A8).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-c1.xz > /tmp/qn && chmod +x /tmp/qn
T0=$(date +%s); mkdir -p $OUT/r
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
W=/tmp/w; mkdir -p $W
for s in mamba2-2.7b:16:m27 mamba2-2.7b:2:m27c mamba-2.8b:16:m28; do
  IFS=: read -r like l n <<< "$s"
  ( /tmp/qn synth --like $like --layers $l --vocab 8192 -o $W/$n >/dev/null &&
    timeout 150 /tmp/qn compile $W/$n --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/$n.qmb >/dev/null 2>&1 ) &
done
wait
echo "built at $(( $(date +%s) - T0 )) s"
( for a in .device/art/*.qmb $W/m27c.qmb; do for c in 1 0; do
    echo "== check cluster=$c $(basename $a) 1x1 steps 4: $(QUAMBA_CUDA_CLUSTER=$c timeout 90 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
  done; done
  a=.device/art/mamba2-small-w4a8.qmb
  echo "== check cluster=1 $(basename $a) 4x8: $(timeout 90 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-400)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(( $(date +%s) - T0 )) s"
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
echo "| round | model | QUAMBA_CUDA_CLUSTER | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|---|" >> $OUT/r/side.md
for r in 1 2; do for m in m27 m28; do for c in 0 1; do
  [ $(( $(date +%s) - T0 )) -lt 330 ] || break
  [ $m = m28 ] && [ $r = 2 ] && continue
  echo "| $r | $m | $c | $(QUAMBA_CUDA_CLUSTER=$c timeout 40 /tmp/qn cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |" | tee -a $OUT/r/side.md
done; done; done
[ $(( $(date +%s) - T0 )) -lt 360 ] && timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-cluster.md 2>&1
[ $(( $(date +%s) - T0 )) -lt 380 ] && QUAMBA_CUDA_CLUSTER=0 timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-nocluster.md 2>&1
[ $(( $(date +%s) - T0 )) -lt 400 ] && timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
echo "traces at $(( $(date +%s) - T0 )) s"
if command -v ncu >/dev/null && [ $(( $(date +%s) - T0 )) -lt 420 ]; then
  timeout 150 ncu --clock-control none --kernel-name regex:'^(gemv_8|ssd_9|rows_10|gemv_11)$' --launch-skip 8 --launch-count 4 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters \
    /tmp/qn cuda bench $W/m27c.qmb --prompt-len 16 --batches 1 --decode-tokens 4 --repeats 1 > $OUT/r/ncu-m27c.txt 2>&1
fi
echo "end $(( $(date +%s) - T0 )) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
