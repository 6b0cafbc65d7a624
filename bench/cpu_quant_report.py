"""Turns cpu_quant.sh's JSON lines into the markdown section of bench/RESULTS.md.

Each (model, engine) keeps its best round for each metric (prefill, decode) and its largest peak
memory. The section between the cpu_quant markers is replaced (or appended the first time).
"""
import argparse
import datetime
import json
import statistics
import platform
import re
import subprocess

BEGIN, END = "<!-- cpu_quant:begin -->", "<!-- cpu_quant:end -->"
ENGINES = ["quamba-fp32", "quamba-w8a8", "quamba-w4a8", "llama.cpp-f32", "llama.cpp-q8_0", "llama.cpp-q4_0"]


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("results_md")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prompt-len", type=int, required=True)
    ap.add_argument("--decode-tokens", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--llama", default="")
    a = ap.parse_args()

    best = {}
    builds = set()
    by_round = {}
    for line in open(a.jsonl):
        r = json.loads(line)
        by_round.setdefault((r["model"], r["round"]), {})[r["engine"]] = r
        k = (r["model"], r["engine"])
        b = best.setdefault(k, {"prefill": 0.0, "decode": 0.0, "peak_mib": 0})
        b["prefill"] = max(b["prefill"], r["prefill"])
        b["decode"] = max(b["decode"], r["decode"])
        b["peak_mib"] = max(b["peak_mib"], r["peak_mib"])
        if "build" in r:
            builds.add(str(r["build"]))
    models = sorted({m for m, _ in best})

    out = [BEGIN, "## Quantized CPU kernels: FP32 vs W8A8 vs W4A8 vs llama.cpp", ""]
    out.append(f"- CPU: {cpu_name()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} logical cores; "
               f"threads used: {a.threads} (every engine)")
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; produced by `THREADS={a.threads} LLAMA_CPP_DIR=... bench/cpu_quant.sh`")
    out.append(f"- Prefill: {a.prompt_len}-token prompt; decode: {a.decode_tokens} single-token steps. {a.rounds} interleaved rounds "
               "(each engine once per round), best round kept. Peak memory: max resident set of the whole benchmark process "
               "(`/usr/bin/time -f %M`), weights + activations of the 512-token prefill.")
    out.append("- quamba W8A8 / W4A8: Quamba2 artifacts (`quambac compile --target cpu-w8a8|cpu-w4a8`), int8·int8 and "
               "int4·int8 linears: decode on one-row kernels generated with cranelift at load (128-bit AVX-512 VNNI `vpdpbusd` here), "
               "prefill on the 512-bit AVX-512 VNNI kernel (`runtime/src/cpu/qgemm_avx512.rs`) where the host has it, else the "
               "generated kernels; the other ops in f32 (conv, SSD/scan, norms, Hadamard). Decode steps of every quamba engine (FP32 too) "
               "run on the decode plan (`runtime/src/cpu/step/`: buffers kept between steps, small ops on the calling thread, "
               "products and scan / SSD steps shared by a team of spinning threads); prefill on the op-by-op interpreter.")
    if a.llama:
        out.append(f"- llama.cpp: `llama-bench -t {a.threads} -p {a.prompt_len} -n {a.decode_tokens}` (build {', '.join(sorted(builds))}), "
                   "GGUF from its `convert_hf_to_gguf.py` (F32) and `llama-quantize` (Q8_0, Q4_0). Its converter rejects these "
                   "checkpoints' custom 8192-token BPE tokenizer (\"BPE pre-tokenizer was not recognized\"); `bench/llama_convert.py` "
                   "tells it the tokenizer is GPT-2 style (what its ByteLevel pre-tokenizer is) and changes nothing else.")
    else:
        out.append("- llama.cpp: ABSENT in this run (LLAMA_CPP_DIR not set or not built), no llama.cpp rows.")
    out += ["", "| model | engine | prefill tok/s | decode tok/s | peak MiB |", "|---|---|---:|---:|---:|"]
    for m in models:
        for e in ENGINES:
            if (m, e) in best:
                b = best[(m, e)]
                out.append(f"| {m} | {e} | {b['prefill']:.1f} | {b['decode']:.1f} | {b['peak_mib']} |")
    out += ["", "| model | W8A8 decode / FP32 | W4A8 decode / FP32 | W4A8 decode / llama.cpp Q4_0 | W8A8 prefill / FP32 | W4A8 prefill / FP32 |",
            "|---|---:|---:|---:|---:|---:|"]
    for m in models:
        g = lambda e, k: best.get((m, e), {}).get(k)
        def ratio(e1, e2, k):
            x, y = g(e1, k), g(e2, k)
            return f"{x / y:.2f}x" if x and y else "n/a"
        out.append(f"| {m} | {ratio('quamba-w8a8', 'quamba-fp32', 'decode')} | {ratio('quamba-w4a8', 'quamba-fp32', 'decode')} | "
                   f"{ratio('quamba-w4a8', 'llama.cpp-q4_0', 'decode')} | {ratio('quamba-w8a8', 'quamba-fp32', 'prefill')} | "
                   f"{ratio('quamba-w4a8', 'quamba-fp32', 'prefill')} |")
    # Within a round the engines ran back to back, so a round's ratio compares engines under the
    # same background load; their median resists a burst that hits one engine's best round.
    out += ["", "Median of the per-round ratios (each round's engines ran back to back), with the range over rounds:", "",
            "| model | W8A8 decode / FP32 | W4A8 decode / FP32 | W4A8 decode / llama.cpp Q4_0 | W8A8 prefill / FP32 | W4A8 prefill / FP32 |",
            "|---|---:|---:|---:|---:|---:|"]
    for m in models:
        def per_round(e1, e2, k):
            v = sorted(d[e1][k] / d[e2][k] for (mm, _), d in by_round.items() if mm == m and e1 in d and e2 in d and d[e2][k])
            return f"{statistics.median(v):.2f}x ({v[0]:.2f}-{v[-1]:.2f})" if v else "n/a"
        out.append(f"| {m} | {per_round('quamba-w8a8', 'quamba-fp32', 'decode')} | {per_round('quamba-w4a8', 'quamba-fp32', 'decode')} | "
                   f"{per_round('quamba-w4a8', 'llama.cpp-q4_0', 'decode')} | {per_round('quamba-w8a8', 'quamba-fp32', 'prefill')} | "
                   f"{per_round('quamba-w4a8', 'quamba-fp32', 'prefill')} |")
    out += ["", "Goals (issue 4): W8A8 decode ≥ 2× our FP32 decode; W4A8 decode faster than llama.cpp Q4_0; prefill ≥ 1.5× our FP32 prefill.",
            "Raw JSON lines: `bench/out/quant/cpu_quant-latest.jsonl` (not committed).", END]
    section = "\n".join(out)

    text = open(a.results_md).read()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(a.results_md, "w").write(text)
    print(section)


if __name__ == "__main__":
    main()
