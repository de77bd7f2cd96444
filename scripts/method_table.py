"""Per-strategy means over seeds of a finished `dtl sweep` (its runs.csv): source and target test
accuracy, mean +- sample std, with each seed's target accuracy, and the training seconds per epoch
from each run's metrics.json when the run directories are there.

    python3 scripts/method_table.py SWEEP_OUT_OR_RUNS_CSV
"""
import csv
import json
import os
import statistics
import sys

arg = sys.argv[1]
path = arg if arg.endswith(".csv") else os.path.join(arg, "runs.csv")
rows = list(csv.DictReader(open(path)))
by = {}
for r in rows:
    by.setdefault(r["strategy.name"], []).append(r)


def ms(v):
    return f"{statistics.mean(v):.4f} +- {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


print("| strategy | source test | target test | per seed | s/epoch |")
print("|---|---|---|---|---|")
for name, rs in by.items():
    rs.sort(key=lambda r: int(r["train.seed"]))
    src = [float(r["source_test_accuracy"]) for r in rs]
    tgt = [float(r["target_test_accuracy"]) for r in rs]
    secs = []
    for r in rs:
        m = os.path.join(os.path.dirname(path), "runs", r["id"], "metrics.json")
        if os.path.exists(m):
            secs.append(json.load(open(m))["seconds_per_epoch"])
    per_epoch = f"{statistics.mean(secs):.1f}" if secs else "-"
    print(f"| {name} | {ms(src)} | {ms(tgt)} | {', '.join(f'{t:.4f}' for t in tgt)} | {per_epoch} |")
