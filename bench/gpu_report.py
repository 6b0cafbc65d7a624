"""Turns bench/gpu.sh's JSON lines into the markdown table of bench/RESULTS.md: per model shape,
each configuration's time to first token, time per output token at each batch size, memory, and
the ratios against our FP16 run and the weight-bandwidth floor."""
import json
import sys
from collections import OrderedDict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by_model = OrderedDict()
for r in rows:
    by_model.setdefault(r["label"].split(" ")[0], []).append(r)
device = rows[0]["device"] if rows else "?"
print(f"Card: {device}. TTFT: 1024-token prompt, batch 1. TPOT: graph-replayed greedy decode after a 16-token prompt.")
print("Floor: weight bytes / measured device copy bandwidth (read+write); with state: plus one sequence's recurrent state read and written. Memory: weights (and all GPU memory held at max batch 16).\n")
print("| model | config | TTFT ms | TPOT b=1 ms | TPOT b=16 ms | weights GB | GPU GB | decode vs FP16 | prefill vs FP16 | weights vs FP16 | floor ms | TPOT/floor | floor with state ms | TPOT/that |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for model, rs in by_model.items():
    fp = next((r for r in rs if r["label"].endswith("fp16") and r.get("engine") == "quamba-cuda"), None)
    for r in rs:
        cfg = r["label"].split(" ", 1)[1]
        t1, t16 = r["tpot_ms"].get("1"), r["tpot_ms"].get("16")
        fmt = lambda x, p=3: "—" if x is None else f"{x:.{p}f}"
        dec = f"{fp['tpot_ms']['1'] / t1:.2f}×" if fp and t1 else "—"
        pre = f"{fp['ttft_ms'] / r['ttft_ms']:.2f}×" if fp else "—"
        mem = f"{fp['weights_bytes'] / r['weights_bytes']:.2f}×" if fp else "—"
        floor = r.get("weight_floor_ms")
        ratio = f"{t1 / floor:.2f}" if floor and t1 else "—"
        # Weights plus one sequence's recurrent state read and written (`cuda bench` since the
        # twenty-first session; older lines have no such field).
        state_floor = r.get("state_floor_ms")
        state_ratio = f"{t1 / state_floor:.2f}" if state_floor and t1 else "—"
        print(f"| {model} | {cfg} | {fmt(r['ttft_ms'], 2)} | {fmt(t1)} | {fmt(t16)} | {r['weights_bytes'] / 1e9:.2f} | "
              f"{r['gpu_bytes'] / 1e9:.2f} | {dec} | {pre} | {mem} | {fmt(floor)} | {ratio} | {fmt(state_floor)} | {state_ratio} |")
