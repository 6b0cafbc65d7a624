#!/usr/bin/env bash
# Session 14, call 4: the final binary (qn: SSD and Mamba1 one-row steps gate their outputs for
# the split chains after them). Checks of the Mamba1 side (2-layer mamba-2.8b shapes, trained
# Mamba1 models), 16-layer mamba-2.8b side by side with the session-start binary (qb, c5) and
# with `QUAMBA_CUDA_GATE_IN_SCAN=0`, then full size: mamba2-2.7b W4A8 and our FP16, mamba-2.8b
# W4A8 and FP16 (1024-token prompt, batches 1 and 16), in that order while time lasts.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-d4.xz qb=quambac-c5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
for like in mamba2-2.7b mamba-2.8b; do
  ( /tmp/qn synth --like $like -o $W/$like >/dev/null &&
    timeout 200 /tmp/qn compile $W/$like --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/$like-w4a8.qmb > $OUT/r/compile-$like.log 2>&1 ) &
done
build_short /tmp/qn mamba-2.8b:16:m28 mamba-2.8b:2:m28c
echo "short built at $(elapsed) s"
( for a in $W/m28c.qmb .device/art/mamba1-*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 90 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done
  echo "== check qn m28c 4x8 steps 2: $(timeout 90 /tmp/qn cuda check $W/m28c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
echo "| m28 | qb | $(tpot /tmp/qb $W/m28.qmb) |" | tee -a $OUT/r/side.md
echo "| m28 | qn | $(tpot /tmp/qn $W/m28.qmb) |" | tee -a $OUT/r/side.md
echo "| m28 | qn, GATE_IN_SCAN=0 | $(tpot /tmp/qn $W/m28.qmb QUAMBA_CUDA_GATE_IN_SCAN=0) |" | tee -a $OUT/r/side.md
echo "| m28 | qb again | $(tpot /tmp/qb $W/m28.qmb) |" | tee -a $OUT/r/side.md
wait
echo "full size built at $(elapsed) s"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
timeout 110 /tmp/qn cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 420 ] && timeout 110 /tmp/qn cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 480 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b-w4a8.qmb --label "mamba-2.8b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 480 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b --label "mamba-2.8b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
