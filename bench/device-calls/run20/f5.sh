#!/usr/bin/env bash
# Session 16, call 5 (run inline): the greedy divergence of 2-layer mamba2-2.7b W8A8 from a
# one-token prompt (call 4), with the fifteenth session's binary (qb), the final one (qn) and the
# final one without the conv product's launch bounds.
source bench/device-calls/common.sh; unpack_binaries qn=quambac-f3.xz qb=quambac-e4.xz; TARGET=h100-w8a8 build_short /tmp/qn mamba2-2.7b:2:m27c8; for b in qb qn; do echo "$b $(timeout 60 /tmp/$b cuda check $W/m27c8.qmb --batch 1 --seq 1 --steps 4 2>&1 | tail -1)"; done; echo "mb0 $(QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=0 timeout 60 /tmp/qn cuda check $W/m27c8.qmb --batch 1 --seq 1 --steps 4 2>&1 | tail -1)"
