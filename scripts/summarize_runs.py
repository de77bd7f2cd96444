#!/usr/bin/env python3
"""Summarises dtl run directories (each with metrics.json) into a markdown table: runs are grouped
by the name before the final `-sN` (seed) suffix; mean and sample standard deviation over seeds
(the feature gap only where every run recorded one; train time is the mean per run).

Usage: scripts/summarize_runs.py RESULTS_DIR"""
import json, os, re, statistics, sys

root = sys.argv[1]
groups = {}
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "metrics.json")
    if not os.path.isfile(path):
        continue
    m = json.load(open(path))
    key = re.sub(r"-s\d+$", "", name)
    groups.setdefault(key, []).append((name, m))


def ms(v):
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{statistics.mean(v):.4f} +- {statistics.stdev(v):.4f}"


print("| runs | strategy | source -> target | train images (source / target) | epochs | seeds | source test acc | target test acc | feature-gap MMD^2 | train s/run | s/epoch |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key, runs in groups.items():
    m0 = runs[0][1]
    src, tgt = m0["source"], m0["target"]
    # One domain on both sides: metrics.json keys its records "<domain> (source)" / "(target)".
    dsrc, dtgt = (f"{src} (source)", f"{tgt} (target)") if src == tgt else (src, tgt)
    dsrc, dtgt = (dsrc if dsrc in m0["data"] else src), (dtgt if dtgt in m0["data"] else tgt)
    sizes = f'{m0["data"][dsrc]["train_size"]} / {m0["data"][dtgt]["train_size"]}'
    s = [r[1]["source_test"]["accuracy"] for r in runs]
    t = [r[1]["target_test"]["accuracy"] for r in runs]
    e = [r[1]["seconds_per_epoch"] for r in runs]
    seeds = ",".join(str(r[1]["seed"]) for r in runs)
    place = m0["data"][dtgt]["placement"]
    gaps = [r[1]["feature_gap"]["mmd2"] for r in runs if "feature_gap" in r[1]]
    gap = ms(gaps) if len(gaps) == len(runs) else ""
    wall = statistics.mean(r[1]["train_seconds"] for r in runs)
    print(f"| {key} | {m0['strategy']} | {src} -> {tgt} ({place}) | {sizes} | {m0['epochs']} | {seeds} | {ms(s)} | {ms(t)} | {gap} | {wall:.0f} | {statistics.median(e):.1f} |")
