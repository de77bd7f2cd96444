#!/usr/bin/env bash
# Instance weighting against source only (docs/results.md), seeds 0-2, LeNet, 10 epochs:
# - prior shift on MNIST: a source of 10,000 training images drawn after keeping all of classes
#   0-4 and a tenth of 5-9, a balanced target (5,000 unlabelled training images; the balanced
#   MNIST test split scores it);
# - MNIST -> USPS on ADDA's protocol sizes (2,000 / 1,800 training images).
# Each of ratio, kliep and kmm weights the source on pixels. Then, on the prior shift, the
# feature-alignment strategies dann and ddc alone and with KMM weights on their source loss.
# Finished runs are skipped, so an interrupted measurement continues. Then
# `scripts/summarize_runs.py OUT_ROOT`.
# Usage: scripts/measure_weighting.sh DTL_BINARY DATA_DIR OUT_ROOT
set -euo pipefail
dtl=$1 data=$2 out=$3
run() { name=$1; shift; [ -f "$out/$name/metrics.json" ] && return 0; "$dtl" train --data-dir "$data" --out "$out/$name" --overwrite "$@" 2>>"$out/log.txt" | tee -a "$out/summary.txt"; }
mkdir -p "$out"
prior=(--source mnist --target mnist --source-class-fractions 1,1,1,1,1,0.1,0.1,0.1,0.1,0.1
       --source-train-size 10000 --target-train-size 5000 --epochs 10)
m2u=(--source mnist --target usps --source-train-size 2000 --target-train-size 1800 --epochs 10)
for s in 0 1 2; do
  for task in prior m2u; do
    if [ $task = prior ]; then args=("${prior[@]}"); else args=("${m2u[@]}"); fi
    run $task-source-only-s$s --strategy source-only "${args[@]}" --seed $s
    for e in ratio kliep kmm; do
      run $task-iw-$e-s$s --strategy iw --estimator $e "${args[@]}" --seed $s
    done
  done
done
for s in 0 1 2; do
  for st in dann ddc; do
    run prior-$st-s$s --strategy $st "${prior[@]}" --seed $s
    run prior-$st-kmm-s$s --strategy $st --estimator kmm "${prior[@]}" --seed $s
  done
done
# TrAdaBoost with 100 labelled USPS training images (the semi-supervised case).
for s in 0 1 2; do
  run m2u-tradaboost-s$s --strategy tradaboost --labelled-target 100 "${m2u[@]}" --seed $s
done
