#!/usr/bin/env bash
# Session 14, call 2: where call 1's out_proj-with-chain (`quamba::gemv_chain`) spends its time.
# An experiment binary (qx, not committed) that takes QUAMBA_EXP=NOGATE (the chain loads x raw:
# no fake quantization, no gate), NOHAD (no Hadamard transform) and MARK (the trace's "sums done"
# marks the chain's end instead of the sums'); wrong results, timing only. TPOT of 16-layer
# mamba2-2.7b and mamba-2.8b W4A8 against the session-start binary (qb), tiles per cluster 8.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qx=quambac-d2.xz qb=quambac-c5.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee $OUT/r/card.txt
build_short /tmp/qx mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "built at $(elapsed) s"
echo "| model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for m in m27 m28; do
  echo "| $m | qb | $(tpot /tmp/qb $W/$m.qmb) |" | tee -a $OUT/r/side.md
  for t in 8; do for e in none NOGATE NOHAD NOGATE,NOHAD; do
    [ $(elapsed) -lt 420 ] || break
    echo "| $m | tiles $t, $e | $(tpot /tmp/qx $W/$m.qmb QUAMBA_CUDA_CHAIN_IN_PRODUCT=$t QUAMBA_EXP=$e) |" | tee -a $OUT/r/side.md
  done; done
  echo "| $m | qb again | $(tpot /tmp/qb $W/$m.qmb) |" | tee -a $OUT/r/side.md
done
[ $(elapsed) -lt 470 ] && QUAMBA_CUDA_CHAIN_IN_PRODUCT=8 QUAMBA_EXP=MARK timeout 30 /tmp/qx cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-mark.md 2>&1
[ $(elapsed) -lt 500 ] && QUAMBA_CUDA_CHAIN_IN_PRODUCT=8 QUAMBA_EXP=MARK timeout 30 /tmp/qx cuda trace $W/m28.qmb --steps 4 > $OUT/r/trace-m28-mark.md 2>&1
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
