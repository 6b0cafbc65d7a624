#!/usr/bin/env bash
# Where one layer's decode time goes, per kernel, cheaply (one device call, a minute or two):
#   bench/gpu_layer_profile.sh QUAMBAC LIKE CONFIG [LAYERS]   e.g. ... ./quambac mamba2-8b w4a8 2
# Synthesizes LIKE with LAYERS layers (default 2) and an 8192-token vocabulary, so the step is its
# layers' kernels rather than the head's, compiles CONFIG (w8a8 w4a8 w4a16; fp16: the checkpoint),
# then prints (1) `quambac cuda bench --profile`: every kernel launched and timed alone, with the
# weight bytes per second of the products, and (2) the graph-replayed step with each of the first
# kernels left out (QUAMBA_CUDA_SKIP=NAME): its in-graph cost, launch latency included.
set -uo pipefail
Q=$1; like=$2; cfg=$3; layers=${4:-2}
WORK=${WORK:-/tmp/quamba-layer}
dir=$WORK/$like-$layers
mkdir -p "$WORK"
[ -f "$dir/model.safetensors" ] || "$Q" synth --like "$like" --layers "$layers" --vocab 8192 -o "$dir" >/dev/null || exit 1
m=$dir
if [ "$cfg" != fp16 ]; then
  m=$WORK/$like-$layers-$cfg.qmb
  [ -f "$m" ] || "$Q" compile "$dir" --target "h100-$cfg" --no-gptq --calib-samples 2 --calib-len 128 -o "$m" >/dev/null || exit 1
fi
args="--prompt-len 64 --batches 1 --decode-tokens 64 --repeats 5"
# shellcheck disable=SC2086
"$Q" cuda bench "$m" $args --profile 2>"$WORK/profile.txt" >/dev/null
sed -n '/^profile decode/,$p' "$WORK/profile.txt"
tpot() { "$@" --json $args 2>/dev/null | tail -n 1 | python3 -c 'import json,sys; print("%.4f" % json.loads(sys.stdin.read())["tpot_ms"]["1"])'; }
full=$(tpot "$Q" cuda bench "$m")
echo "| $like ${layers}L $cfg | step ms | Δ vs full |"
echo "|---|---|---|"
echo "| full | $full | — |"
# Every generated kernel (prefill-only ones leave the step unchanged), from the model's source.
"$Q" cuda source "$m" -o "$WORK/src.cu" >/dev/null 2>&1
for k in $(sed -n 's/^extern "C" __global__ void __launch_bounds__([0-9]*) \([a-z]*_[0-9]*\)(.*/\1/p' "$WORK/src.cu"); do
  t=$(QUAMBA_CUDA_SKIP=$k tpot "$Q" cuda bench "$m")
  echo "| without $k | $t | $(python3 -c "print('%+.4f' % ($t - $full))") |"
done
