#!/usr/bin/env python3
"""Reference values for dtl-ops' kernels, computed by PyTorch on random inputs of several shapes:
conv2d (stride, padding, bias), max_pool2d (kernel, stride, padding) and batch_norm in training
mode, each with its output and the gradients of sum(output * w) for a random w.

Usage: /path/to/venv/bin/python scripts/make_ops_fixture.py
Writes crates/dtl-ops/tests/fixtures/ops_pytorch.json (values rounded to 7 significant digits)."""
import json, os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
out = os.path.join(os.path.dirname(__file__), "..", "crates/dtl-ops/tests/fixtures/ops_pytorch.json")


def r(t):
    return [float(f"{v:.7g}") for v in t.detach().double().flatten().tolist()]


cases = []
for (b, c, h, w, o, k, s, p) in [(2, 3, 9, 8, 4, 3, 1, 1), (3, 2, 11, 11, 5, 5, 2, 2), (2, 3, 12, 12, 4, 7, 2, 3), (4, 6, 5, 5, 3, 1, 1, 0)]:
    x = torch.randn(b, c, h, w, requires_grad=True)
    wt = (torch.randn(o, c, k, k) * 0.3).requires_grad_()
    bias = torch.randn(o, requires_grad=True)
    y = F.conv2d(x, wt, bias, stride=s, padding=p)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    cases.append({"op": "conv2d", "stride": s, "padding": p, "x_shape": [b, c, h, w], "x": r(x), "w_shape": [o, c, k, k],
                  "w": r(wt), "bias": r(bias), "y_shape": list(y.shape), "y": r(y), "g": r(g),
                  "dx": r(x.grad), "dw": r(wt.grad), "dbias": r(bias.grad)})

for (b, c, h, w, k, s, p) in [(2, 3, 8, 8, 2, 2, 0), (2, 2, 9, 7, 3, 2, 1), (1, 4, 6, 6, 3, 1, 1)]:
    x = torch.randn(b, c, h, w, requires_grad=True)
    y = F.max_pool2d(x, k, s, p)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    cases.append({"op": "max_pool2d", "k": k, "stride": s, "padding": p, "x_shape": [b, c, h, w], "x": r(x),
                  "y_shape": list(y.shape), "y": r(y), "g": r(g), "dx": r(x.grad)})

for shape in [(8, 4, 5, 5), (16, 6), (3, 2, 4, 3)]:
    x = (torch.randn(*shape) * 2 + 0.5).requires_grad_()
    c = shape[1]
    gamma = (torch.rand(c) + 0.5).requires_grad_()
    beta = torch.randn(c, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=1.0, eps=1e-5)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # With momentum 1 the running buffers hold the batch mean and unbiased variance.
    cases.append({"op": "batch_norm", "x_shape": list(shape), "x": r(x), "gamma": r(gamma), "beta": r(beta),
                  "y": r(y), "g": r(g), "dx": r(x.grad), "dgamma": r(gamma.grad), "dbeta": r(beta.grad),
                  "mean": r(rm), "var_unbiased": r(rv)})

json.dump({"torch_version": torch.__version__, "cases": cases}, open(out, "w"))
print("wrote", out, len(cases), "cases")
