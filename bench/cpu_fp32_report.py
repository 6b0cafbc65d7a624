#!/usr/bin/env python3
"""Turns the JSON lines of bench/cpu_fp32.sh into a markdown table, prints it, and puts it
into RESULTS.md as the section "## FP32 CPU: quamba vs transformers" (replacing that
section if present, leaving every other section as it was). Standard library only."""

import argparse
import datetime
import json
import os
import platform
import re

HEADING = "## FP32 CPU: quamba vs transformers"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def section(rows, args) -> str:
    by_model = {}
    for r in rows:
        by_model.setdefault(os.path.basename(r["model"].rstrip("/")), {})[r["engine"]] = r
    hf = next((r for r in rows if r["engine"] == "transformers-fp32"), {})
    threads = sorted({r["threads"] for r in rows})
    busy = max((r.get("cpu_busy_before_pct", 0) for r in rows), default=0)

    out = [HEADING, ""]
    out.append(f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; threads used: {', '.join(map(str, threads))}")
    out.append(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    out.append(f"- transformers {hf.get('transformers_version', '?')}, torch {hf.get('torch_version', '?')} (PyPI wheel, run on CPU)")
    out.append(f"- Prompt {rows[0]['prompt_len']} tokens (prefill: best of 3 fresh forwards, all-position logits); "
               f"decode: {rows[0]['decode_tokens']} greedy single-token steps after a 16-token prefill + 1 warm-up step")
    out += ["", "| model | engine | threads | prefill tok/s | decode tok/s |", "|---|---|---:|---:|---:|"]
    for model, engines in by_model.items():
        for r in engines.values():
            out.append(f"| {model} | {r['engine']} | {r['threads']} | {r['prefill_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} |")
    out += ["", "| model | prefill ours / transformers | decode ours / transformers |", "|---|---:|---:|"]
    for model, engines in by_model.items():
        q, t = engines.get("quamba-fp32"), engines.get("transformers-fp32")
        if q and t:
            out.append(f"| {model} | {q['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:.2f}x "
                       f"| {q['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}x |")
    out += [
        "",
        "Notes:",
        "- transformers runs its slow pure-PyTorch Mamba/Mamba2 path on CPU: the `mamba_ssm` / "
        "`causal_conv1d` CUDA kernels do not exist there (it logs the fallback for `selective_scan_fn`, "
        "`mamba_chunk_scan_combined`, `causal_conv1d_fn`, ...). `mambapy` is not installed, so Mamba1 "
        "prefill uses the sequential scan loop. Both engines compute FP32 (f16/bf16 weights upcast at load).",
        "- Background CPU load just before each run (the script waits up to QUIET_WAIT s for <15%; "
        "on a 2-core machine, numbers taken under load are unreliable, torch's OpenMP worst of all): "
        + ", ".join(f"{os.path.basename(r['model'].rstrip('/'))}/{r['engine']} {r.get('cpu_busy_before_pct', '?')}%"
                    for r in rows)
        + (" — **measured under load**" if busy > 15 else ""),
        "",
        "Commands (MODEL_DIR = each model dir):",
        "",
        "```",
        args.script_cmd,
        args.quamba_cmd,
        args.hf_cmd,
        "```",
        "",
    ]
    return "\n".join(out)


def replace_section(text: str, new: str) -> str:
    # The section runs from its heading to the next "## " heading (or the end of the file).
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: new + "\n", text, count=1)
    if not text.strip():
        return "# Benchmarks\n\n" + new
    return text.rstrip("\n") + "\n\n" + new


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("jsonl")
    p.add_argument("results_md")
    p.add_argument("--quamba-cmd", required=True)
    p.add_argument("--hf-cmd", required=True)
    p.add_argument("--script-cmd", required=True)
    args = p.parse_args()
    with open(args.jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    new = section(rows, args)
    print(new)
    old = open(args.results_md).read() if os.path.exists(args.results_md) else ""
    with open(args.results_md, "w") as f:
        f.write(replace_section(old, new))


if __name__ == "__main__":
    main()
