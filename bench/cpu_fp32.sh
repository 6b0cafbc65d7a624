#!/usr/bin/env bash
# FP32 CPU prefill/decode tokens/s: our executor (quambac bench) vs Hugging Face transformers,
# same models, same thread count, same measurement (see bench/transformers_speed.py).
# Prints a markdown table and writes it into bench/RESULTS.md; raw JSON lines go to bench/out/.
#
# Env knobs: THREADS (default: nproc), MODELS (model dirs, space separated; default: the two
# *-small models in shared/models), PROMPT_LEN (512), DECODE_TOKENS (64),
# QUIET_WAIT (seconds to wait for other CPU load to settle before each run; default 300).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
THREADS="${THREADS:-$(nproc)}"
PROMPT_LEN="${PROMPT_LEN:-512}"
DECODE_TOKENS="${DECODE_TOKENS:-64}"
QUIET_WAIT="${QUIET_WAIT:-300}"
MODELS_DIR="$(cd "$ROOT/../shared/models" 2>/dev/null && pwd || echo /work/shared/models)"
MODELS="${MODELS:-$MODELS_DIR/mamba1-small $MODELS_DIR/mamba2-small}"
VENV="$BENCH/.venv"
REQS="$BENCH/requirements-transformers-cpu.txt"
OUT="$BENCH/out"
mkdir -p "$OUT"

# --- 1. throwaway venv with CPU-usable torch + transformers -------------------------------
# PyPI only ships the CUDA build of torch for Linux x86_64, so the requirements file pins the
# smallest closure that imports (see its header); --no-deps keeps pip from pulling the rest.
# A stamp of the requirements file's hash makes a pin change rebuild the venv.
stamp="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "== creating $VENV (torch CPU use + transformers; a few GB, a few minutes)" >&2
  rm -rf "$VENV"
  t0=$SECONDS
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --no-deps -r "$REQS"
  # Smoke test: the CUDA libs must load (import) and a CPU matmul must run.
  "$VENV/bin/python" -c 'import torch, transformers; assert (torch.ones(4) @ torch.ones(4)).item() == 4'
  echo "$stamp" > "$VENV/.stamp"
  echo "== venv ready in $((SECONDS - t0)) s, $(du -sh "$VENV" | cut -f1) on disk" >&2
fi

# --- 2. our release binary ---------------------------------------------------------------
(cd "$ROOT" && cargo build --release --quiet)
QUAMBAC="$ROOT/target/release/quambac"

# --- 3. run both engines on each model ---------------------------------------------------
# Other processes on this small machine (builds, tests) skew throughput badly, so before each
# run wait until the CPUs are mostly idle; the busy share seen last is kept with the results.
cpu_busy_pct() {  # share of all CPUs busy over 1 s, from /proc/stat
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
wait_quiet() {
  local waited=0 busy
  busy=$(cpu_busy_pct)
  while (( busy > 15 && waited < QUIET_WAIT )); do
    (( waited == 0 )) && echo "   (waiting for other CPU load to settle: ${busy}% busy)" >&2
    sleep 4; waited=$((waited + 5)); busy=$(cpu_busy_pct)
  done
  echo "$busy"
}

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
JSONL="$OUT/cpu_fp32-$RUN_ID.jsonl"
QUAMBA_CMD="$QUAMBAC --threads $THREADS bench MODEL_DIR --prompt-len $PROMPT_LEN --decode-tokens $DECODE_TOKENS --json"
HF_CMD="$VENV/bin/python $BENCH/transformers_speed.py MODEL_DIR --threads $THREADS --prompt-len $PROMPT_LEN --decode-tokens $DECODE_TOKENS"

# Tags each JSON line with the background CPU load measured just before its run.
tag_busy() { "$VENV/bin/python" -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); d["cpu_busy_before_pct"]=int(sys.argv[1]); print(json.dumps(d))' "$1"; }

for model in $MODELS; do
  name="$(basename "$model")"
  echo "== $name: quamba ($THREADS threads)" >&2
  busy=$(wait_quiet)
  "$QUAMBAC" --threads "$THREADS" bench "$model" --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE_TOKENS" --json \
    | tag_busy "$busy" | tee -a "$JSONL" >&2
  echo "== $name: transformers ($THREADS threads)" >&2
  busy=$(wait_quiet)
  # stderr (load messages, slow-path fallback warnings) is kept beside the JSON.
  "$VENV/bin/python" "$BENCH/transformers_speed.py" "$model" --threads "$THREADS" \
    --prompt-len "$PROMPT_LEN" --decode-tokens "$DECODE_TOKENS" 2> "$OUT/cpu_fp32-$RUN_ID-$name-transformers.log" \
    | tag_busy "$busy" | tee -a "$JSONL" >&2
done
cp "$JSONL" "$OUT/cpu_fp32-latest.jsonl"

# --- 4. table -> stdout and bench/RESULTS.md ---------------------------------------------
python3 "$BENCH/cpu_fp32_report.py" "$JSONL" "$BENCH/RESULTS.md" \
  --quamba-cmd "$QUAMBA_CMD" --hf-cmd "$HF_CMD" --script-cmd "THREADS=$THREADS bench/cpu_fp32.sh"
