#!/usr/bin/env bash
# Quantized CPU throughput, side by side in one run: our FP32 executor, our W8A8 and W4A8
# artifacts (generated kernels, kernels/src/cpu), and llama.cpp F32 / Q8_0 / Q4_0 on the same
# models and thread count. Prefill and decode tokens/s plus peak resident memory of each process.
# Engines run in interleaved rounds (every engine once per round); the best round of each is kept,
# so a burst of background load on this shared machine hits one round, not one engine.
#
# Env knobs: THREADS (default 2), MODELS (checkpoint dirs; default the two *-small models),
# PROMPT_LEN (512), DECODE_TOKENS (64), ROUNDS (3), CALIB_SAMPLES (8, for compiling the artifacts),
# LLAMA_CPP_DIR: a llama.cpp checkout built OUTSIDE this repo (build/bin/llama-bench and
#   build/bin/llama-quantize); without it the llama.cpp rows are skipped, and the script says so.
# LLAMA_PY: a python with torch + numpy + safetensors for llama.cpp's converter (default python3).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
THREADS="${THREADS:-2}"
PROMPT_LEN="${PROMPT_LEN:-512}"
DECODE_TOKENS="${DECODE_TOKENS:-64}"
ROUNDS="${ROUNDS:-3}"
CALIB_SAMPLES="${CALIB_SAMPLES:-8}"
MODELS_DIR="$(cd "$ROOT/../shared/models" 2>/dev/null && pwd || echo /work/shared/models)"
MODELS="${MODELS:-$MODELS_DIR/mamba1-small $MODELS_DIR/mamba2-small}"
LLAMA_PY="${LLAMA_PY:-python3}"
OUT="$BENCH/out/quant"
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release --quiet)
QUAMBAC="$ROOT/target/release/quambac"

LLAMA_BENCH="" LLAMA_QUANTIZE=""
if [[ -n "${LLAMA_CPP_DIR:-}" && -x "$LLAMA_CPP_DIR/build/bin/llama-bench" && -x "$LLAMA_CPP_DIR/build/bin/llama-quantize" ]]; then
  LLAMA_BENCH="$LLAMA_CPP_DIR/build/bin/llama-bench"
  LLAMA_QUANTIZE="$LLAMA_CPP_DIR/build/bin/llama-quantize"
else
  echo "== llama.cpp: ABSENT (set LLAMA_CPP_DIR to a checkout built outside this repo, with build/bin/llama-bench" \
       "and build/bin/llama-quantize); its rows are skipped" >&2
fi

# --- 1. the engines' inputs: our artifacts, llama.cpp's GGUF files ------------------------
for model in $MODELS; do
  name="$(basename "$model")"
  for target in w8a8 w4a8; do
    art="$OUT/$name-$target.qmb"
    if [[ ! -f "$art" ]]; then
      echo "== compiling $name for cpu-$target" >&2
      "$QUAMBAC" --threads "$THREADS" compile "$model" --target "cpu-$target" --calib-samples "$CALIB_SAMPLES" -o "$art" >&2
    fi
  done
  if [[ -n "$LLAMA_BENCH" && ! -f "$OUT/$name-q4_0.gguf" ]]; then
    echo "== converting $name for llama.cpp" >&2
    if "$LLAMA_PY" "$BENCH/llama_convert.py" "$LLAMA_CPP_DIR" "$model" "$OUT/$name-f32.gguf" > "$OUT/$name-convert.log" 2>&1; then
      for q in Q8_0 Q4_0; do
        "$LLAMA_QUANTIZE" "$OUT/$name-f32.gguf" "$OUT/$name-${q,,}.gguf" "$q" > "$OUT/$name-quantize-$q.log" 2>&1
      done
    else
      echo "== llama.cpp's converter REJECTED $name (see $OUT/$name-convert.log); no llama.cpp rows for it" >&2
    fi
  fi
done

# --- 2. interleaved rounds ------------------------------------------------------------------
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
JSONL="$OUT/cpu_quant-$RUN_ID.jsonl"
# Runs a command under /usr/bin/time and prints its peak RSS in MiB (the command's stdout goes to $1).
peak_mib() {
  local out="$1"; shift
  /usr/bin/time -f "%M" -o "$out.rss" "$@" > "$out" 2> "$out.err"
  echo $(( $(tail -1 "$out.rss") / 1024 ))
}
for round in $(seq 1 "$ROUNDS"); do
  for model in $MODELS; do
    name="$(basename "$model")"
    for engine in fp32 w8a8 w4a8; do
      input="$model"; [[ $engine != fp32 ]] && input="$OUT/$name-$engine.qmb"
      echo "== round $round: $name quamba-$engine" >&2
      rss=$(peak_mib "$OUT/run.json" "$QUAMBAC" --threads "$THREADS" bench "$input" --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE_TOKENS" --repeats 2 --json)
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"model": sys.argv[2], "engine": sys.argv[3], "round": int(sys.argv[4]), "prefill": d["prefill_tokens_per_s"], "decode": d["decode_tokens_per_s"], "peak_mib": int(sys.argv[5])}))' \
        "$OUT/run.json" "$name" "quamba-$engine" "$round" "$rss" | tee -a "$JSONL" >&2
    done
    [[ -z "$LLAMA_BENCH" || ! -f "$OUT/$name-q4_0.gguf" ]] && continue
    for q in f32 q8_0 q4_0; do
      echo "== round $round: $name llama.cpp-$q" >&2
      rss=$(peak_mib "$OUT/run.json" "$LLAMA_BENCH" -m "$OUT/$name-$q.gguf" -t "$THREADS" -p "$PROMPT_LEN" -n "$DECODE_TOKENS" -r 2 -o jsonl)
      python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pp = max(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
tg = max(r["avg_ts"] for r in rows if r["n_gen"] > 0)
print(json.dumps({"model": sys.argv[2], "engine": sys.argv[3], "round": int(sys.argv[4]), "prefill": pp, "decode": tg, "peak_mib": int(sys.argv[5]), "build": rows[0].get("build_commit", "?")}))' \
        "$OUT/run.json" "$name" "llama.cpp-$q" "$round" "$rss" | tee -a "$JSONL" >&2
    done
  done
done
cp "$JSONL" "$OUT/cpu_quant-latest.jsonl"

# --- 3. table -> stdout and bench/RESULTS.md ------------------------------------------------
python3 "$BENCH/cpu_quant_report.py" "$JSONL" "$BENCH/RESULTS.md" --threads "$THREADS" --prompt-len "$PROMPT_LEN" \
  --decode-tokens "$DECODE_TOKENS" --rounds "$ROUNDS" --llama "${LLAMA_BENCH:+present}"
