#!/usr/bin/env bash
# Session 15, call 4: the chain-in-step variant of calls 1-3 lost and is not in the code. qn: the
# session-start code but Mamba1's one-row step (`selective_step_dt`) only requests its prologue's
# loads before its wait (A's exp and the stores to shared memory after it). Mamba1 checks,
# 16-layer mamba-2.8b TPOT side by side with the fourteenth session's final binary (qb, d5), a
# trace, then full-size mamba-2.8b W4A8 and our FP16 (compiled meanwhile).
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-e4.xz qb=quambac-d5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
( /tmp/qn synth --like mamba-2.8b -o $W/mamba-2.8b >/dev/null &&
  timeout 200 /tmp/qn compile $W/mamba-2.8b --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/mamba-2.8b-w4a8.qmb > $OUT/r/compile.log 2>&1 ) &
build_short /tmp/qn mamba-2.8b:2:m28c mamba-2.8b:16:m28
echo "short built at $(elapsed) s"
( for a in $W/m28c.qmb .device/art/mamba1-*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-400)"
  done
  echo "== check qn m28c 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $W/m28c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-400)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for b in qb qn; do
  echo "| m28 | $b | $(tpot /tmp/$b $W/m28.qmb) |" | tee -a $OUT/r/side.md
done; done
timeout 30 /tmp/qn cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28.md 2>&1
wait
echo "full size built at $(elapsed) s"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 400 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b-w4a8.qmb --label "mamba-2.8b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 440 ] && timeout 100 /tmp/qn cuda bench $W/mamba-2.8b --label "mamba-2.8b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
