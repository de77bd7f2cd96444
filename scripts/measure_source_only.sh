#!/usr/bin/env bash
# Source-only baselines on the real digit domains (README.md and docs/results.md).
# Usage: scripts/measure_source_only.sh DTL_BINARY DATA_DIR OUT_ROOT
# Full training sets: 10 epochs; ADDA's protocol (2000 MNIST / 1800 USPS training images): 40
# epochs; seeds 0, 1, 2; USPS placed with `fill` (default) and with `box`. Then
# `scripts/summarize_runs.py OUT_ROOT` prints the tables (it groups runs by name without `-sN`).
set -euo pipefail
dtl=$1 data=$2 out=$3
run() { name=$1; shift; "$dtl" train --data-dir "$data" --out "$out/$name" --overwrite "$@" 2>>"$out/log.txt" | tee -a "$out/summary.txt"; }
mkdir -p "$out"
for placement in fill box; do
  tag=$([ "$placement" = box ] && echo "-box" || echo "")
  for s in 0 1 2; do
    run m2u-full$tag-s$s --source mnist --target usps --epochs 10 --seed $s --placement $placement
    run u2m-full$tag-s$s --source usps --target mnist --epochs 10 --seed $s --placement $placement
    run m2u-adda$tag-s$s --source mnist --target usps --source-train-size 2000 --target-train-size 1800 \
      --epochs 40 --seed $s --placement $placement
    run u2m-adda$tag-s$s --source usps --target mnist --source-train-size 1800 --target-train-size 2000 \
      --epochs 40 --seed $s --placement $placement
  done
done
