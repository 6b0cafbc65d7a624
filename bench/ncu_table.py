"""One decode step's kernels from an Nsight Compute CSV (bench/gpu_profile.sh): the launches
from the last step's embedding lookup to its argmax, grouped by kernel, with their summed
durations; compared with the graph-replayed step time of the same label in the JSON lines."""
import json
import sys
from collections import OrderedDict

from ncu_csv import durations

path, label = sys.argv[1], sys.argv[2]
rows = durations(path)
end = max(i for i, r in enumerate(rows) if r[0].startswith("quamba_argmax"))
start = max(i for i, r in enumerate(rows[:end]) if r[0].startswith("embed"))
step = rows[start:end + 1]
by = OrderedDict()
for name, grid, block, us in step:
    e = by.setdefault((name, grid, block), [0, 0.0])
    e[0] += 1
    e[1] += us
total = sum(r[3] for r in step)
tpot = None
if len(sys.argv) > 3:
    for l in open(sys.argv[3]):
        if l.startswith("{"):
            j = json.loads(l)
            if j.get("label") == label:
                tpot = j["tpot_ms"].get("1")
print(f"\n{label}: one decode step, {len(step)} kernels, {total / 1e3:.3f} ms of kernel time"
      + (f"; graph-replayed step {tpot:.3f} ms, so {tpot - total / 1e3:.3f} ms between kernels" if tpot else ""))
print("| kernel | grid | block | launches | µs each | µs total | share |")
print("|---|---|---|---|---|---|---|")
for (name, grid, block), (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"| {name} | {grid} | {block} | {n} | {us / n:.2f} | {us:.1f} | {100 * us / total:.1f}% |")
