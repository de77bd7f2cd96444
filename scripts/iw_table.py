#!/usr/bin/env python3
"""Tables of docs/results.md's instance-weighting section from the runs of
scripts/measure_weighting.sh: per group of seeds (run directories NAME-sS), the target test
accuracy, its mean over classes 0-4 and 5-9 (the prior shift keeps a tenth of 5-9 in the source),
the mean weight of a source image of 5-9 over one of 0-4 (the true ratio is 10 there), and the
effective sample size of the weights as a share of the source. Mean +- sample std over seeds.

Usage: scripts/iw_table.py OUT_ROOT
"""
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def fmt(values, digits=4):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def class_mean(per_class, classes):
    vals = [per_class[c] for c in classes if per_class[c] is not None]
    return sum(vals) / len(vals)


def weight_ratio(weights):
    per = weights["per_class"]

    def mean(classes):
        n = sum(per[c]["n"] for c in classes)
        return sum(per[c]["mean"] * per[c]["n"] for c in classes) / n

    return mean(range(5, 10)) / mean(range(5))


def main(root):
    groups = defaultdict(list)
    for m in sorted(Path(root).glob("*/metrics.json")):
        name = re.sub(r"-s\d+$", "", m.parent.name)
        groups[name].append(json.loads(m.read_text()))
    print("| runs | seeds | target acc | classes 0-4 | classes 5-9 | w(5-9) / w(0-4) | ESS share |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in sorted(groups.items()):
        acc = [r["target_test"]["accuracy"] for r in runs]
        lo = [class_mean(r["target_test"]["per_class"], range(5)) for r in runs]
        hi = [class_mean(r["target_test"]["per_class"], range(5, 10)) for r in runs]
        w = [r["source_weights"] for r in runs if r.get("source_weights")]
        ratio = [weight_ratio(x) for x in w]
        ess = [x["ess_fraction"] for x in w]
        seeds = ",".join(str(r["seed"]) for r in runs)
        print(
            f"| {name} | {seeds} | {fmt(acc)} | {fmt(lo)} | {fmt(hi)} | {fmt(ratio, 2)} | {fmt(ess, 3)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
