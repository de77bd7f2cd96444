#!/usr/bin/env python3
"""Markdown tables of docs/yosinski.md from a sweep's summary.json (one sweep or a merge): base
networks per split, then per split and n each setting's mean +- sample std, and the derived
measures the findings are read from (co-adaptation drop baseB - BnB, specificity drop BnB - AnB,
fine-tuning gains AnB+ - baseB and BnB+ - baseB averaged over n, RnB at the top).

Usage: scripts/yosinski_tables.py SUMMARY_JSON
"""
import json
import sys

SETTINGS = ["BnB", "BnB+", "AnB", "AnB+", "RnB"]


def cell(stat, seeds=2):
    if stat is None:
        return "-"
    if stat.get("std") is None or seeds < 2:
        return f"{stat['mean']:.4f}"
    return f"{stat['mean']:.4f} +- {stat['std']:.4f}"


def main(path):
    s = json.load(open(path))
    print("| split | baseA | baseB |\n|---|---|---|")
    for sp in s["splits"]:
        k = len(sp["tasks"])
        print(f"| {sp['split']} | {cell(sp['base_a'], k)} | {cell(sp['base_b'], k)} |")
    for sp in s["splits"]:
        print(f"\n{sp['split'].capitalize()} split:\n")
        print("| n | " + " | ".join(SETTINGS) + " |")
        print("|---|" + "---|" * len(SETTINGS))
        for layer in sp["layers"]:
            st = layer["settings"]
            k = len(sp["tasks"])
            print(f"| {layer['n']} | " + " | ".join(cell(st.get(name), k) for name in SETTINGS) + " |")
    print("\nDerived (points, means over seeds):\n")
    for sp in s["splits"]:
        base = sp["base_b"]["mean"]
        layers = sp["layers"]
        co = [100 * (base - l["settings"]["BnB"]["mean"]) for l in layers]
        spec = [100 * (l["settings"]["BnB"]["mean"] - l["settings"]["AnB"]["mean"]) for l in layers]
        gain_a = [100 * (l["settings"]["AnB+"]["mean"] - base) for l in layers]
        gain_b = [100 * (l["settings"]["BnB+"]["mean"] - base) for l in layers]
        top = layers[-1]["settings"]["RnB"]
        print(
            f"- {sp['split']}: co-adaptation drop {min(co):+.2f} .. {max(co):+.2f}; "
            f"specificity drop by n: {', '.join(f'{v:+.2f}' for v in spec)}; "
            f"AnB+ - baseB mean {sum(gain_a) / len(gain_a):+.2f} (min {min(gain_a):+.2f}); "
            f"BnB+ - baseB mean {sum(gain_b) / len(gain_b):+.2f}; "
            f"RnB at n = {layers[-1]['n']}: {cell(top, len(sp['tasks']))}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
