#!/usr/bin/env bash
# Session 15, call 2: as call 1, but a step running the chain after it lets the next kernel be
# scheduled only once its own work is done (qn; `QUAMBA_CUDA_STEP_TRIGGER=start` is call 1's
# early trigger, `QUAMBA_CUDA_CHAIN_IN_STEP=0` the chain's own launch, in the same binary).
# Full-size mamba2-2.7b and mamba-2.8b are synthesized and compiled meanwhile. Checks, 16-layer
# TPOT side by side (two rounds), traces, then full size W4A8 and our FP16 while time lasts.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-e2.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
for like in mamba2-2.7b mamba-2.8b; do
  ( /tmp/qn synth --like $like -o $W/$like >/dev/null &&
    timeout 200 /tmp/qn compile $W/$like --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o $W/$like-w4a8.qmb > $OUT/r/compile-$like.log 2>&1 ) &
done
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short built at $(elapsed) s"
( for a in $W/m27c.qmb $W/m28c.qmb .device/art/*.qmb; do
    echo "== check qn $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-330)"
  done
  for a in m27c m28c; do
    echo "== check qn $a 4x8 steps 2: $(timeout 60 /tmp/qn cuda check $W/$a.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-330)"
  done
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | binary | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m27 m28; do
  [ $(elapsed) -lt 330 ] || break
  echo "| $m | qn, CHAIN_IN_STEP=0 | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_CHAIN_IN_STEP=0) |" | tee -a $OUT/r/side.md
  echo "| $m | qn | $(tpot /tmp/qn $W/$m.qmb) |" | tee -a $OUT/r/side.md
  [ $round = 1 ] && echo "| $m | qn, STEP_TRIGGER=start | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_STEP_TRIGGER=start) |" | tee -a $OUT/r/side.md
done; done
echo "timed at $(elapsed) s"
for m in m27 m28; do timeout 30 /tmp/qn cuda trace $W/$m.qmb --steps 4 > $OUT/r/trace-$m.md 2>&1; done
wait
echo "full size built at $(elapsed) s"
F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
[ $(elapsed) -lt 430 ] && timeout 100 /tmp/qn cuda bench $W/mamba2-2.7b-w4a8.qmb --label "mamba2-2.7b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 460 ] && timeout 100 /tmp/qn cuda bench $W/mamba2-2.7b --label "mamba2-2.7b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 480 ] && timeout 90 /tmp/qn cuda bench $W/mamba-2.8b-w4a8.qmb --label "mamba-2.8b w4a8" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
[ $(elapsed) -lt 500 ] && timeout 90 /tmp/qn cuda bench $W/mamba-2.8b --label "mamba-2.8b fp16" $F 2>/dev/null | tail -1 | tee -a $OUT/r/full.jsonl
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
