#!/usr/bin/env bash
# Session 16, call 1: in_proj's one-row product (gemv with the conv step) no longer reads a load
# before its wait. qn: the conv column's operands value-initialized (mamba2-2.7b: no spill, 51
# registers); QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=5 asks ptxas for 5 blocks per SM (48 registers,
# no spill at 2.7B or 2.8B), =3 for 3 (55). Checks, then 16-layer TPOT side by side with the
# fifteenth session's final binary (qb, e4), two rounds; the device's ptxas SASS of in_proj
# checked with bench/sass_prewait.py; traces.
set -uo pipefail
source bench/device-calls/common.sh
unpack_binaries qn=quambac-f1.xz qb=quambac-e4.xz
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,driver_version --format=csv | tee $OUT/r/card.txt
build_short /tmp/qn mamba2-2.7b:2:m27c mamba-2.8b:2:m28c mamba2-2.7b:16:m27 mamba-2.8b:16:m28
echo "short built at $(elapsed) s"
( for mb in "" 5; do
    for a in $W/m27c.qmb $W/m28c.qmb .device/art/*.qmb; do
      echo "== check qn mb=$mb $(basename $a) 1x1 steps 4: $(env ${mb:+QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=$mb} timeout 60 /tmp/qn cuda check $a --batch 1 --seq 1 --steps 4 --json 2>&1 | tail -1 | cut -c1-300)"
    done
    for a in $W/m27c.qmb $W/m28c.qmb; do
      echo "== check qn mb=$mb $(basename $a) 4x8 steps 2: $(env ${mb:+QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=$mb} timeout 60 /tmp/qn cuda check $a --batch 4 --seq 8 --steps 2 --json 2>&1 | tail -1 | cut -c1-300)"
    done
  done
) 2>&1 | sed 's/mb= /mb=default /' | tee $OUT/r/checks.txt
echo "checks at $(elapsed) s"
echo "| model | variant | TPOT ms (batch 1 / 16) |" > $OUT/r/side.md; echo "|---|---|---|" >> $OUT/r/side.md
for round in 1 2; do for m in m27 m28; do
  echo "| $m | qb (e4) | $(tpot /tmp/qb $W/$m.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qn | $(tpot /tmp/qn $W/$m.qmb) |" | tee -a $OUT/r/side.md
  echo "| $m | qn min blocks 5 | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=5) |" | tee -a $OUT/r/side.md
  echo "| $m | qn min blocks 3 | $(tpot /tmp/qn $W/$m.qmb QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=3) |" | tee -a $OUT/r/side.md
done; done
echo "tpot at $(elapsed) s"
# The device's own ptxas on the PTX the runs cached: registers and spills of every in_proj, and
# any load read before a wait.
( for p in $QUAMBA_CACHE_DIR/kernels/*-sm_90.ptx; do
    /usr/local/cuda/bin/ptxas -arch=sm_90 -v "$p" -o "${p%.ptx}.cubin" 2>&1 | grep -A1 "gemv_8'" | tr '\n' ' '; echo " <- $(basename $p)"
    PATH=/usr/local/cuda/bin:$PATH python3 bench/sass_prewait.py "${p%.ptx}.cubin"
  done ) > $OUT/r/sass.txt 2>&1
/usr/local/cuda/bin/ptxas --version | tail -1 >> $OUT/r/sass.txt
timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27.md 2>&1
QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=5 timeout 30 /tmp/qn cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-mb5.md 2>&1
timeout 30 /tmp/qb cuda trace $W/m27.qmb --steps 4 > $OUT/r/trace-m27-qb.md 2>&1
echo "end $(elapsed) s"
tar -C $OUT -czf $OUT/r.tgz r && rm -rf $OUT/r
