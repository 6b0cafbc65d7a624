#!/usr/bin/env bash
# Session 17, call 5: g5a fixes g3's Mamba1 batched scan (its int8 state was never dequantized:
# the multi-row checks failed) and drops the SSD step's second dequantize; g5b instead holds the
# SSD step's scales from the wait and dequantizes once its inputs are staged. Checks (Mamba1
# trained artifacts, 2-layer models); 16-layer TPOT: f32 states, int8 with g5a and g5b.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qa=quambac-g5a.xz qh=quambac-g5b.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qa mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28 &
COMPILE_FLAGS=--f32-states build_short /tmp/qa mamba2-2.7b:16:m27f mamba-2.8b:16:m28f &
wait
echo "short built at $(elapsed) s" | tee $OUT/r/times.txt
summary() { python3 -c 'import json,sys
for l in sys.stdin:
    try: j=json.loads(l)
    except Exception: print(l.strip()[:160]); continue
    print("passed=%s max_abs_diff=%.3g argmax=%.3f greedy=%s/%s" % (j["passed"], j["max_abs_diff"], j["argmax_agreement"], j["greedy_matching_prefix"], j["greedy_tokens"]))'; }
( for a in .device/art2/mamba1*.qmb $W/m28c.qmb $W/m27c.qmb; do
    echo "qa $(basename $a) 1x1 steps 4: $(timeout 60 /tmp/qa cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
    echo "qa $(basename $a) 4x8 steps 2: $(timeout 60 /tmp/qa cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
  done
  echo "qh m27c.qmb 1x1 steps 4: $(timeout 60 /tmp/qh cuda check $W/m27c.qmb --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | summary)"
  echo "qh m27c.qmb 4x8 steps 2: $(timeout 60 /tmp/qh cuda check $W/m27c.qmb --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | summary)"
) 2>&1 | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s" | tee -a $OUT/r/times.txt
echo "| model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
echo "| m27 | f32 states (g5a) | $(tpot /tmp/qa $W/m27f.qmb) |" | tee -a $OUT/r/side.md
echo "| m27 | int8 states, g5a (dequantize at the wait) | $(tpot /tmp/qa $W/m27.qmb) |" | tee -a $OUT/r/side.md
echo "| m27 | int8 states, g5b (scales held, dequantize after staging) | $(tpot /tmp/qh $W/m27.qmb) |" | tee -a $OUT/r/side.md
echo "| m28 | f32 states (g5a) | $(tpot /tmp/qa $W/m28f.qmb) |" | tee -a $OUT/r/side.md
echo "| m28 | int8 states (g5a) | $(tpot /tmp/qa $W/m28.qmb) |" | tee -a $OUT/r/side.md
echo "end $(elapsed) s" | tee -a $OUT/r/times.txt
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
