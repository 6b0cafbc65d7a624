"""One prefill's kernels from an Nsight Compute CSV: the longest run of launches that ends at a
greedy argmax (the prompt's prefill and its first token), grouped by kernel, with summed
durations. Usage: ncu_prefill_table.py CSV LABEL"""
import sys
from collections import OrderedDict

from ncu_csv import durations

path, label = sys.argv[1], sys.argv[2]
rows = durations(path)
ends = [i for i, r in enumerate(rows) if r[0].startswith("quamba_argmax")]
segments, start = [], 0
for e in ends:
    segments.append(rows[start:e + 1])
    start = e + 1
seg = max(segments, key=len)
total = sum(r[3] for r in seg)
by = OrderedDict()
for name, grid, block, us in seg:
    e = by.setdefault((name, grid, block), [0, 0.0])
    e[0] += 1
    e[1] += us
kinds = OrderedDict()
for name, grid, block, us in seg:
    k = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
    kinds[k] = kinds.get(k, 0.0) + us
print(f"\n{label}: one prefill, {len(seg)} kernels, {total / 1e3:.3f} ms of kernel time")
print("| kind | µs total | share |\n|---|---|---|")
for k, us in sorted(kinds.items(), key=lambda kv: -kv[1]):
    print(f"| {k} | {us:.1f} | {100 * us / total:.1f}% |")
print("\n| kernel | grid | block | launches | µs each | µs total | share |\n|---|---|---|---|---|---|---|")
for (name, grid, block), (n, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
    print(f"| {name} | {grid} | {block} | {n} | {us / n:.2f} | {us:.1f} | {100 * us / total:.1f}% |")
