#!/usr/bin/env python3
"""Reference values for dtl-losses, computed by PyTorch in float64 from the definitions:
MMD^2 (biased, unbiased, linear-time; linear, Gaussian and multi-kernel; median heuristic) and
CORAL, with their gradients with respect to the source sample; the GAN losses of ADDA / DANN
from discriminator logits (PyTorch's binary_cross_entropy_with_logits and logsigmoid), with their
gradients with respect to both logit vectors, including logits far in the saturated range.

Usage: /path/to/venv/bin/python scripts/make_losses_fixture.py
Writes crates/dtl-losses/tests/fixtures/losses_pytorch.json."""
import json, os

import torch

torch.manual_seed(0)
out = os.path.join(os.path.dirname(__file__), "..", "crates/dtl-losses/tests/fixtures/losses_pytorch.json")
xs0 = torch.randn(7, 5, dtype=torch.float64)
xt0 = torch.randn(6, 5, dtype=torch.float64) * 1.3 + 0.4


def d2(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def gauss(dd, sig2, w):
    return sum(wi * torch.exp(-dd / (2 * s)) for s, wi in zip(sig2, w))


def median_sig2(xs, xt, mults):
    z = torch.cat([xs, xt])
    dd = d2(z, z).detach()
    n = dd.shape[0]
    off = dd[~torch.eye(n, dtype=torch.bool)]
    med = off.sort().values[off.numel() // 2]
    return [m * med for m in mults]


def mmd(xs, xt, kern, est):
    n, m = xs.shape[0], xt.shape[0]
    if est == "linear":
        p = min(n, m) // 2
        x1, x2, y1, y2 = xs[0:2 * p:2], xs[1:2 * p:2], xt[0:2 * p:2], xt[1:2 * p:2]
        if kern[0] == "linear":
            k = lambda a, b: (a * b).sum(-1)
        else:
            k = lambda a, b: gauss(((a - b) ** 2).sum(-1), kern[1], kern[2])
        return (k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)).mean()
    if kern[0] == "linear":
        kss, ktt, kst = xs @ xs.t(), xt @ xt.t(), xs @ xt.t()
    else:
        kss, ktt, kst = (gauss(d2(a, b), kern[1], kern[2]) for a, b in ((xs, xs), (xt, xt), (xs, xt)))
    if est == "biased":
        return kss.mean() + ktt.mean() - 2 * kst.mean()
    off = lambda k: (k.sum() - k.diag().sum()) / (k.shape[0] * (k.shape[0] - 1))
    return off(kss) + off(ktt) - 2 * kst.mean()


def coral(xs, xt):
    def cov(x):
        c = x - x.mean(0, keepdim=True)
        return c.t() @ c / (x.shape[0] - 1)
    d = xs.shape[1]
    return ((cov(xs) - cov(xt)) ** 2).sum() / (4 * d * d)


cases = []
sig = [0.5, 1.0, 2.0]
for name, kern_fn, est in [
    ("linear-biased", lambda xs, xt: ("linear",), "biased"),
    ("linear-unbiased", lambda xs, xt: ("linear",), "unbiased"),
    ("linear-linear", lambda xs, xt: ("linear",), "linear"),
    ("gauss-biased", lambda xs, xt: ("gauss", [s * s for s in sig], [0.2, 0.3, 0.5]), "biased"),
    ("gauss-unbiased", lambda xs, xt: ("gauss", [s * s for s in sig], [0.2, 0.3, 0.5]), "unbiased"),
    ("gauss-linear", lambda xs, xt: ("gauss", [s * s for s in sig], [0.2, 0.3, 0.5]), "linear"),
    ("median-biased", lambda xs, xt: ("gauss", median_sig2(xs, xt, [0.5, 1.0, 2.0]), [1 / 3] * 3), "biased"),
]:
    xs = xs0.clone().requires_grad_()
    v = mmd(xs, xt0, kern_fn(xs, xt0), est)
    v.backward()
    cases.append({"name": name, "value": float(v), "grad_xs": xs.grad.flatten().tolist()})
xs = xs0.clone().requires_grad_()
v = coral(xs, xt0)
v.backward()
cases.append({"name": "coral", "value": float(v), "grad_xs": xs.grad.flatten().tolist()})
F = torch.nn.functional
ls0 = torch.tensor([2.0, -1.5, 0.3, 40.0, -120.0, 0.0], dtype=torch.float64)
lt0 = torch.tensor([-3.0, 0.7, 95.0, -0.2, -60.0], dtype=torch.float64)
gan_cases = []
for name, fn in [
    ("discriminator", lambda a, b: F.binary_cross_entropy_with_logits(
        torch.cat([a, b]), torch.cat([torch.ones_like(a), torch.zeros_like(b)]))),
    # log(1 - sigmoid(x)) = logsigmoid(-x)
    ("generator_minimax", lambda a, b: F.logsigmoid(-b).mean()),
    ("generator_inverted", lambda a, b: -F.logsigmoid(b).mean()),
]:
    a, b = ls0.clone().requires_grad_(), lt0.clone().requires_grad_()
    v = fn(a, b)
    v.backward()
    ga = a.grad.tolist() if a.grad is not None else [0.0] * len(ls0)
    gan_cases.append({"name": name, "value": float(v), "grad_source": ga, "grad_target": b.grad.tolist()})
json.dump({"torch_version": torch.__version__, "xs": xs0.flatten().tolist(), "xt": xt0.flatten().tolist(),
           "cases": cases, "logits_source": ls0.tolist(), "logits_target": lt0.tolist(),
           "gan_cases": gan_cases}, open(out, "w"), indent=1)
print("wrote", out)
