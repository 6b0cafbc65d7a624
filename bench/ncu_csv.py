"""Kernel durations from an Nsight Compute CSV (`ncu --metrics gpu__time_duration.sum --csv
--print-units base`): (kernel name, grid, block, µs) in launch order."""
import csv
import sys


def durations(path):
    rows = []
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            rows.append((r["Kernel Name"].split("(")[0], r["Grid Size"], r["Block Size"], float(r["Metric Value"].replace(",", "")) / 1e3))
    if not rows:
        sys.exit(f"{path}: no kernel durations")
    return rows
