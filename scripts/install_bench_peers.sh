#!/bin/sh
# Makes the Python environment the benchmarks compare dtl with (never needed by dtl's tests):
# PyTorch 2.15.0 for `cargo xtask bench --torch VENV/bin/python` (scripts/bench_torch.py) and
# pytorch-adapt 0.0.83 for `cargo xtask bench --strategies --peer VENV/bin/python`
# (scripts/bench_pytorch_adapt.py). About 5 GB (PyPI's torch wheel carries CUDA libraries; on a
# CPU-only machine it runs on the CPU).
#
#   scripts/install_bench_peers.sh [VENV]      (default: venv)
set -eu
venv="${1:-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# pytorch-adapt 0.0.83 imports torchmetrics 0.9, which needs pkg_resources (setuptools < 81).
"$venv/bin/pip" install --quiet "torch==2.15.0" "pytorch-adapt==0.0.83" "setuptools<81"
"$venv/bin/python" -c "import torch, pytorch_adapt; print('torch', torch.__version__, '| cpu', torch.backends.cpu.get_cpu_capability(), '| pytorch-adapt', pytorch_adapt.__version__)"
