#!/usr/bin/env bash
# DDC, DAN and Deep CORAL on the real digit domains (docs/results.md), with each strategy's default
# settings: full training sets, 10 epochs, seeds 0-2, USPS placed with `fill` (the source-only rows
# of scripts/measure_source_only.sh are the baseline). Then `scripts/summarize_runs.py OUT_ROOT`.
# Usage: scripts/measure_discrepancy.sh DTL_BINARY DATA_DIR OUT_ROOT
set -euo pipefail
dtl=$1 data=$2 out=$3
run() { name=$1; shift; "$dtl" train --data-dir "$data" --out "$out/$name" --overwrite "$@" 2>>"$out/log.txt" | tee -a "$out/summary.txt"; }
mkdir -p "$out"
for s in 0 1 2; do
  for strategy in ddc dan coral; do
    run m2u-$strategy-s$s --strategy $strategy --source mnist --target usps --epochs 10 --seed $s
    run u2m-$strategy-s$s --strategy $strategy --source usps --target mnist --epochs 10 --seed $s
  done
done
