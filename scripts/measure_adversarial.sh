#!/usr/bin/env bash
# ADDA and DANN on the real digit domains (docs/results.md), USPS placed with `fill` like the
# source-only rows of scripts/measure_source_only.sh. ADDA's protocol (2,000 MNIST / 1,800 USPS
# training images): adda pre-trains 40 epochs (the source-only row's budget) then adapts 60; dann
# trains 40 epochs. Full training sets: adda 10 + 10 epochs, dann 10 epochs. Seeds 0-2, protocol
# rows first. Then `scripts/summarize_runs.py OUT_ROOT`. PLACEMENT (default fill) `box` fits USPS
# into MNIST's 20x20 box instead (`--placement box`, run names `*-box-sS`), like the source-only
# `*-box` rows.
# Usage: scripts/measure_adversarial.sh DTL_BINARY DATA_DIR OUT_ROOT [PLACEMENT]
set -euo pipefail
dtl=$1 data=$2 out=$3 placement=${4:-fill}
case $placement in fill) suffix="" ;; box) suffix="-box" ;; *) echo "placement must be fill or box, got $placement" >&2; exit 2 ;; esac
run() { name=${1%-s*}$suffix-${1##*-}; shift; [ -f "$out/$name/metrics.json" ] && return 0; "$dtl" train --data-dir "$data" --out "$out/$name" --overwrite --placement "$placement" "$@" 2>>"$out/log.txt" | tee -a "$out/summary.txt"; }
mkdir -p "$out"
m2u_p=(--source mnist --target usps --source-train-size 2000 --target-train-size 1800)
u2m_p=(--source usps --target mnist --source-train-size 1800 --target-train-size 2000)
for s in 0 1 2; do
  run m2u-adda-protocol-s$s --strategy adda "${m2u_p[@]}" --epochs 100 --source-epochs 40 --seed $s
  run u2m-adda-protocol-s$s --strategy adda "${u2m_p[@]}" --epochs 100 --source-epochs 40 --seed $s
  run m2u-dann-protocol-s$s --strategy dann "${m2u_p[@]}" --epochs 40 --seed $s
  run u2m-dann-protocol-s$s --strategy dann "${u2m_p[@]}" --epochs 40 --seed $s
done
for s in 0 1 2; do
  run u2m-adda-full-s$s --strategy adda --source usps --target mnist --epochs 20 --source-epochs 10 --seed $s
  run u2m-dann-full-s$s --strategy dann --source usps --target mnist --epochs 10 --seed $s
  run m2u-adda-full-s$s --strategy adda --source mnist --target usps --epochs 20 --source-epochs 10 --seed $s
  run m2u-dann-full-s$s --strategy dann --source mnist --target usps --epochs 10 --seed $s
done
