"""The selection table of a finished `dtl sweep` for docs/selection.md: per validator, the run it
chose with that run's settings, its target accuracy, the oracle gap and the rank correlations.

    python3 scripts/selection_table.py SWEEP_OUT
"""
import csv
import json
import sys

out = sys.argv[1]
sel = json.load(open(f"{out}/selection.json"))
rows = {r["id"]: r for r in csv.DictReader(open(f"{out}/runs.csv"))}


def settings(run_id):
    r = rows[run_id]
    parts = [r["strategy.name"]]
    for k in ("strategy.max-coeff", "strategy.lambda", "optim.lr", "train.seed"):
        if r.get(k):
            parts.append(f"{k.split('.')[-1]} {r[k]}")
    return ", ".join(parts)


def corr(v):
    return "-" if v is None else f"{v:+.3f}"


print(f"{sel['runs']} runs; oracle {settings(sel['oracle'])} at {sel['oracle_accuracy']:.4f}; "
      f"mean over runs {sel['mean_accuracy']:.4f}.\n")
print("| validator | selected run | selected | gap | Spearman | weighted | flags |")
print("|---|---|---|---|---|---|---|")
for c in sel["choices"]:
    flags = [f for f, on in (("collapsed", c["selected_collapsed"]), ("unreliable", c["selected_unreliable"])) if on]
    print(f"| `{c['validator']}` | {settings(c['selected'])} | {c['selected_accuracy']:.4f} | "
          f"{c['oracle_gap']:.4f} | {corr(c['spearman'])} | {corr(c['weighted_spearman'])} | {', '.join(flags)} |")
