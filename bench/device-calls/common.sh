# Shared steps of the device-call scripts (`source bench/device-calls/common.sh` from the
# repository root); each session's scripts had repeated them.
#   unpack_binaries NAME=FILE.xz...   .device/FILE.xz decompressed to /tmp/NAME, executable
#   build_short BIN LIKE:LAYERS:NAME... synthesized shortened models (vocabulary 8192) compiled to
#                                     W4A8 ($TARGET, default h100-w4a8; extra compile flags in
#                                     $COMPILE_FLAGS) as $W/NAME.qmb, in parallel
#   tpot BIN ART [ENV=VALUE...]       "TPOT b=1 / b=16" of a short decode bench (as $A)
#   ttft BIN ART [ENV=VALUE...]       TTFT ms of a 1024-token prompt at batch 1 (3 repeats)
#   check_models BIN NAME:ART...      `cuda check` of each at 2 x 64 and 1 x 61 rows, a summary
#                                     line each ("NAME 2x64: passed=...")
#   ttft_row NAME ART "BIN [ENV=VALUE...]"...  a markdown row: NAME, then each variant's TTFT
#   ncu_prefill BIN ART NAME          one 1024-token prefill under Nsight Compute: kernel times in
#                                     $OUT/r/ncu-NAME.csv, their table appended to $OUT/r/prefill.md
#   elapsed                           seconds since this file was sourced
#   summary                           `cuda check --json` lines (stdin) as one line each
#   pack_results                      $OUT/r as one $OUT/r.tgz (a call returns at most eight files:
#                                     the twenty-third session lost a model's results past them)
#   build_full_in_background BIN LIKE...  full-size synthesized models compiled to W4A8 as
#                                     $W/LIKE-w4a8.qmb beside the caller's work (a later plain
#                                     `wait` waits for them; logs in $OUT/r/compile-LIKE.log)
#   bench_full BIN UNTIL LIKE...      their W4A8 then our FP16 (the synthesized checkpoint), one
#                                     1024-token-prompt bench each, lines to $OUT/r/full.jsonl;
#                                     none begins after UNTIL seconds (the call's time limit)
# Sets LD_LIBRARY_PATH for the device's CUDA, the kernel cache dir, $W (work folder), $A (bench
# arguments) and creates $OUT/r, which the caller tars up at the end.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} QUAMBA_CACHE_DIR=${QUAMBA_CACHE_DIR:-/tmp/qc}
W=${W:-/tmp/w}
A=${A:-"--prompt-len 16 --batches 1,16 --decode-tokens 64 --repeats 5"}
T0=$(date +%s)
mkdir -p "$W" "${OUT:?OUT is the folder whose files come back}/r"

elapsed() { echo $(( $(date +%s) - T0 )); }

unpack_binaries() {
  local pair name file
  for pair in "$@"; do
    name=${pair%%=*}; file=${pair#*=}
    xz -dc ".device/$file" > "/tmp/$name" && chmod +x "/tmp/$name" || { echo "cannot unpack .device/$file" >&2; return 1; }
  done
}

build_short() {
  local bin=$1 spec like layers name; shift
  for spec in "$@"; do
    IFS=: read -r like layers name <<< "$spec"
    ( "$bin" synth --like "$like" --layers "$layers" --vocab 8192 -o "$W/$name" >/dev/null &&
      timeout 150 "$bin" compile "$W/$name" --target "${TARGET:-h100-w4a8}" --no-gptq --calib-samples 2 --calib-len 64 ${COMPILE_FLAGS:-} -o "$W/$name.qmb" > "$W/$name.log" 2>&1 ||
      echo "build of $name failed: $(tail -n 2 "$W/$name.log" 2>/dev/null)" >&2 ) &
  done
  wait
}

tpot() {
  local bin=$1 art=$2; shift 2
  # shellcheck disable=SC2086
  env "$@" timeout 60 "$bin" cuda bench "$art" --json $A 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["tpot_ms"]; print(" / ".join("%.4f" % t[k] for k in sorted(t, key=int)))' 2>/dev/null || echo "failed"
}

ttft() {
  local bin=$1 art=$2; shift 2
  env "$@" timeout 60 "$bin" cuda bench "$art" --json --prompt-len 1024 --batches 1 --decode-tokens 8 --repeats 3 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ttft_ms"])' 2>/dev/null || echo failed
}

check_models() {
  local bin=$1 pair name art rows; shift
  for pair in "$@"; do
    name=${pair%%:*}; art=${pair#*:}
    for rows in 2x64 1x61; do
      echo "$name $rows: $(timeout 90 "$bin" cuda check "$art" --batch "${rows%x*}" --seq "${rows#*x}" --json 2>&1 | tail -1 | summary)"
    done
  done
}

ttft_row() {
  local name=$1 art=$2 row variant bin env; shift 2
  row="| $name |"
  for variant in "$@"; do
    read -r bin env <<< "$variant"
    # shellcheck disable=SC2086
    row="$row $(ttft "$bin" "$art" ${env:-X=1}) |"
  done
  echo "$row"
}

ncu_prefill() {
  local bin=$1 art=$2 name=$3
  timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --log-file "$OUT/r/ncu-$name.csv" \
    "$bin" cuda bench "$art" --prompt-len 1024 --batches 1 --decode-tokens 2 --repeats 1 >/dev/null 2>"$OUT/r/ncu-$name.log"
  python3 bench/ncu_prefill_table.py "$OUT/r/ncu-$name.csv" "$name" >> "$OUT/r/prefill.md" 2>&1
}

pack_results() { tar -C "$OUT" -czf "$OUT/r.tgz" r && rm -rf "$OUT/r"; }

summary() { python3 -c 'import json,sys
for l in sys.stdin:
    try: j=json.loads(l)
    except Exception: print(l.strip()[:160]); continue
    print("passed=%s max_abs_diff=%.3g argmax=%.3f greedy=%s/%s" % (j["passed"], j["max_abs_diff"], j["argmax_agreement"], j["greedy_matching_prefix"], j["greedy_tokens"]))'; }

build_full_in_background() {
  local bin=$1 like; shift
  for like in "$@"; do
    ( "$bin" synth --like "$like" -o "$W/$like" >/dev/null &&
      timeout 330 "$bin" compile "$W/$like" --target h100-w4a8 --no-gptq --calib-samples 2 --calib-len 128 -o "$W/$like-w4a8.qmb" > "$OUT/r/compile-$like.log" 2>&1
      echo "$like built at $(elapsed) s" >> "$OUT/r/times.txt" ) &
  done
}

bench_full() {
  local bin=$1 until=$2 like; shift 2
  local F="--json --prompt-len 1024 --batches 1,16 --decode-tokens 64 --repeats 3"
  for like in "$@"; do
    # shellcheck disable=SC2086
    [ "$(elapsed)" -lt "$until" ] && timeout 75 "$bin" cuda bench "$W/$like-w4a8.qmb" --label "$like w4a8" $F 2>/dev/null | tail -1 | tee -a "$OUT/r/full.jsonl"
    # shellcheck disable=SC2086
    [ "$(elapsed)" -lt "$until" ] && timeout 90 "$bin" cuda bench "$W/$like" --label "$like fp16" $F 2>/dev/null | tail -1 | tee -a "$OUT/r/full.jsonl"
    echo "$like benched at $(elapsed) s" | tee -a "$OUT/r/times.txt"
  done
}
