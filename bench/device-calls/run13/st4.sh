#!/usr/bin/env bash
# Session 9, call 4: the streamed in_proj (mamba2-8b W4A8, mamba2-2.7b W8A8), whose conv epilogue's
# code changed, against the session-start binary; 2 rounds.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=/tmp/qc
xz -dc .device/quambac-new.xz > /tmp/qn && xz -dc .device/quambac-old.xz > /tmp/qo && chmod +x /tmp/qn /tmp/qo
nvidia-smi --query-gpu=name --format=csv,noheader
W=/tmp/w; mkdir -p $W $OUT
/tmp/qn synth --like mamba2-8b --layers 8 --vocab 8192 -o $W/m8 >/dev/null
/tmp/qn compile $W/m8 --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m8.qmb >/dev/null 2>&1 &
/tmp/qn synth --like mamba2-2.7b --layers 16 --vocab 8192 -o $W/m27 >/dev/null
/tmp/qn compile $W/m27 --target h100-w8a8 --no-gptq --calib-samples 2 --calib-len 64 -o $W/m27w8.qmb >/dev/null 2>&1
wait
A="--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"
for r in 1 2; do for m in m8 m27w8; do for b in qo qn; do
  echo "| $r | $m | $b | $(timeout 60 /tmp/$b cuda bench $W/$m.qmb --json $A 2>/dev/null | tail -1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))') |"
done; done; done | tee $OUT/stream.md
