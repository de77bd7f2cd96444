#!/usr/bin/env bash
# Source-only baselines on the real digit domains (issue 2's figures).
# Usage: scripts/measure_source_only.sh DTL_BINARY DATA_DIR OUT_ROOT
# Full training sets: 10 epochs; ADDA's protocol (2000 MNIST / 1800 USPS training images): 40 epochs.
set -euo pipefail
dtl=$1 data=$2 out=$3
run() { name=$1; shift; "$dtl" train --data-dir "$data" --out "$out/$name" --overwrite "$@" 2>>"$out/log.txt" | tee -a "$out/summary.txt"; }
mkdir -p "$out"
run m2u-full-s0 --source mnist --target usps --epochs 10 --seed 0
for s in 0 1 2; do run u2m-full-s$s --source usps --target mnist --epochs 10 --seed $s; done
for s in 0 1 2; do
  run m2u-adda-s$s --source mnist --target usps --source-train-size 2000 --target-train-size 1800 --epochs 40 --seed $s
  run u2m-adda-s$s --source usps --target mnist --source-train-size 1800 --target-train-size 2000 --epochs 40 --seed $s
done
run m2u-full-s1 --source mnist --target usps --epochs 10 --seed 1
run m2u-full-s2 --source mnist --target usps --epochs 10 --seed 2
run m2u-full-box-s0 --source mnist --target usps --epochs 10 --seed 0 --placement box
