#!/usr/bin/env bash
# The GPU check: builds dtl with `--features cuda`, runs the kernel test on the CUDA device against
# dtl's CPU kernels, trains every strategy briefly on the GPU and on the CPU (bundled data), and
# runs the benchmark workloads W1-W4 on the GPU against PyTorch on the same GPU. Writes one JSON
# file. Needs an NVIDIA GPU with its driver, the CUDA toolkit (nvcc, for candle's kernels) and,
# for the PyTorch comparison, a Python with a CUDA build of PyTorch.
#
#   scripts/gpu-check.sh [--torch PYTHON] [--out FILE] [--steps N]
#
# Every part is recorded with its exit status and time, so that a part that fails leaves the others
# measured; the script's own status is that of the first part that failed. It takes about 10-15
# minutes on a fresh machine, most of it compiling candle's CUDA kernels.
set -u
# Errors in the parts' logs, not backtraces.
export RUST_BACKTRACE=0
torch=""
out="gpu-check.json"
steps=20
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) torch="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "gpu-check.sh: unknown argument $1 (--torch PYTHON, --out FILE, --steps N)" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
parts="$work/parts.jsonl"
: > "$parts"
status=0

# part NAME COMMAND...: runs COMMAND, keeps its exit status, seconds and first and last lines of
# output. After a failed build every later part is recorded as skipped (exit -1) without running.
built=1
part() {
  local name="$1"; shift
  local t0 t1 rc
  t0=$(date +%s.%N)
  if [ "$built" = 1 ]; then
    "$@" > "$work/$name.log" 2>&1
    rc=$?
  else
    echo "skipped: the CUDA build failed (see the part 'build')" > "$work/$name.log"
    rc=-1
  fi
  t1=$(date +%s.%N)
  # A skipped part (-1) leaves the status to the build that failed.
  [ $rc -gt 0 ] && [ $status -eq 0 ] && status=$rc
  python3 - "$name" "$rc" "$t0" "$t1" "$work/$name.log" >> "$parts" <<'EOF'
import json, sys
name, rc, t0, t1, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
lines = open(log, errors="replace").read().splitlines()
errors = [l for l in lines if l.startswith(("error", "Error", "thread '"))][:10]
print(json.dumps({"part": name, "exit": rc, "seconds": round(t1 - t0, 1), "errors": errors, "tail": lines[-25:]}))
EOF
  echo "gpu-check: $name exit $rc" >&2
}

gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
part build cargo build --release --features cuda -p dtl-cli --bin dtl
[ "$status" = 0 ] || built=0
part kernel-test env DTL_TEST_DEVICE=cuda cargo test --release --features cuda -p dtl-backbones --test kernels -- --ignored
dtl="target/release/dtl"
runs="$work/runs"
for s in source-only ddc dan coral dann cdan mcd mcc self-ensembling adda; do
  extra=()
  # adda pre-trains on the source for 5 epochs by default: one here, two of adaptation.
  [ "$s" = adda ] && extra=(--source-epochs 1)
  for d in cuda cpu; do
    part "train-$s-$d" "$dtl" train --source mnist-small --target optdigits --strategy "$s" \
      --epochs 3 --seed 0 --device "$d" --out "$runs/$s-$d" "${extra[@]}"
  done
done
part bench-prepare cargo bench -q --features cuda -p dtl --bench workloads -- prepare --dir "$work/bench"
for w in W1 W2 W3 W4; do
  part "bench-$w-dtl" cargo bench -q --features cuda -p dtl --bench workloads -- run --workload "$w" \
    --impl dtl --dir "$work/bench" --steps "$steps" --device cuda
  if [ -n "$torch" ]; then
    part "bench-$w-torch" "$torch" scripts/bench_torch.py --workload "$w" --dir "$work/bench" \
      --steps "$steps" --device cuda
  fi
done

python3 - "$parts" "$runs" "$out" "$gpu" "$(git rev-parse HEAD 2>/dev/null)" <<'EOF'
import json, os, sys
parts_file, runs, out, gpu, rev = sys.argv[1:6]
parts = [json.loads(l) for l in open(parts_file)]
train = {}
for p in parts:
    if p["part"].startswith("train-"):
        s, d = p["part"][len("train-"):].rsplit("-", 1)
        m = os.path.join(runs, f"{s}-{d}", "metrics.json")
        if os.path.exists(m):
            j = json.load(open(m))
            train.setdefault(s, {})[d] = {
                "target_accuracy": j["target_test"]["accuracy"],
                "source_accuracy": j["source_test"]["accuracy"],
                "seconds_per_epoch": j["seconds_per_epoch"],
            }
bench = {}
for p in parts:
    if p["part"].startswith("bench-W"):
        _, w, imp = p["part"].split("-")
        line = next((l for l in reversed(p["tail"]) if l.startswith("RESULT ")), None)
        if line:
            kv = dict(x.split("=", 1) for x in line.split()[1:])
            bench.setdefault(w, {})[imp] = {k: kv[k] for k in ("median_ms", "img_s", "loss0", "loss_last") if k in kv}
report = {
    "gpu": gpu,
    "git_rev": rev,
    "model_chosen_by": "last epoch (no selection); bundled mnist-small -> optdigits, 3 epochs, seed 0",
    "train": train,
    "bench": bench,
    "parts": parts,
}
json.dump(report, open(out, "w"), indent=2)
print(f"wrote {out}")
EOF
exit $status
