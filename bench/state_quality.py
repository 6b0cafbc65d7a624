#!/usr/bin/env python3
"""What int8 cached SSM states cost in quality: test-split perplexity of each shared model's A8
artifacts compiled twice, with f32 states (the default) and the method's int8 states (`--int8-states`),
each scored with every window in one call (prefill: the state is never stored) and in calls of
N tokens that carry the state over (N = 1: token-by-token decoding, the state stored in int8
after every token). Prints a Markdown table.

Usage: python3 bench/state_quality.py [--models a,b] [--windows N] [--calib-samples N] [--calls 512,16,1]
(from the repository root, after `cargo build --release`)
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
QUAMBAC = os.path.join(ROOT, "target", "release", "quambac")


def run_json(args):
    out = subprocess.run([QUAMBAC] + args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mamba2-small,mamba1-small")
    ap.add_argument("--precisions", default="w8a8,w4a8")
    ap.add_argument("--windows", type=int, default=8, help="512-token test windows scored per model")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calls", default="512,16,1", help="tokens per call when scoring")
    args = ap.parse_args()
    test = os.path.join(SHARED, "corpus", "test.txt")
    train = os.path.join(SHARED, "corpus", "train.txt")
    outdir = os.path.join(ROOT, "bench", "out")
    os.makedirs(outdir, exist_ok=True)
    calls = [int(c) for c in args.calls.split(",")]
    print(f"| model | config | states | " + " | ".join(f"ppl, {c}-token calls" for c in calls) + " |")
    print("|---|---|---|" + "---|" * len(calls))
    for model in args.models.split(","):
        mdir = os.path.join(SHARED, "models", model)
        fp = run_json(["eval", mdir, "--text", test, "--limit", str(args.windows), "--json"])
        print(f"| {model} | FP32 | f32 | {fp['perplexity']:.4f} |" + " |" * (len(calls) - 1), flush=True)
        for prec in args.precisions.split(","):
            for states in ["f32", "int8"]:
                art = os.path.join(outdir, f"{model}-state-{prec}-{states}.qmb")
                cmd = [QUAMBAC, "compile", mdir, "--target", f"cpu-{prec}", "--calib", train, "--calib-samples", str(args.calib_samples), "-o", art]
                if states == "int8":
                    cmd.append("--int8-states")
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                ppl = [run_json(["eval", art, "--text", test, "--limit", str(args.windows), "--call-tokens", str(c), "--json"])["perplexity"] for c in calls]
                print(f"| {model} | Quamba2 {prec.upper()} | {states} | " + " | ".join(f"{p:.4f}" for p in ppl) + " |", flush=True)


if __name__ == "__main__":
    main()
