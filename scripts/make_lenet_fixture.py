#!/usr/bin/env python3
"""Reference values for dtl's LeNet and ConvNet8, computed by PyTorch.

Builds ADDA's LeNet (conv 20 5x5, max-pool 2, ReLU, conv 50 5x5, Dropout2d, max-pool 2, ReLU,
fc 500, ReLU, head 10) and the 8-layer digit network of the Yosinski experiment (five 3x3 padded
convolutions 16-32-32-64-64 with ReLU, max-pool 2 after the 2nd, 4th and 5th, fc 256, ReLU, dropout,
fc 256, ReLU, dropout, head 10) with weights given by a closed formula (so the fixture need not
store them), runs the first 4 images of dtl's bundled MNIST subset through each in eval mode, and
records the logits, the mean cross-entropy and its gradients. Large gradients are summarised by
their sum of squares and 64 entries at fixed indices.

Usage: /path/to/venv/bin/python scripts/make_lenet_fixture.py
Writes crates/dtl-backbones/tests/fixtures/{lenet,convnet8}_pytorch.json."""
import gzip, json, math, os, struct

import torch
import torch.nn as nn
import torch.nn.functional as F

root = os.path.join(os.path.dirname(__file__), "..")
bundled = os.path.join(root, "crates/dtl-data/bundled/mnist-small")

imgs = gzip.open(os.path.join(bundled, "train-images-idx3-ubyte.gz")).read()[16:16 + 4 * 784]
labels = list(gzip.open(os.path.join(bundled, "train-labels-idx1-ubyte.gz")).read()[8:12])
x = torch.tensor(list(imgs), dtype=torch.float32).reshape(4, 1, 28, 28) / 255.0
y = torch.tensor(labels, dtype=torch.long)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(800, 500)
        self.head = nn.Linear(500, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.head(x)


class ConvNet8(nn.Module):
    def __init__(self):
        super().__init__()
        widths = [1, 16, 32, 32, 64, 64]
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(widths[i], widths[i + 1], 3, padding=1))
        self.fc6 = nn.Linear(64 * 3 * 3, 256)
        self.fc7 = nn.Linear(256, 256)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        for i in range(5):
            x = F.relu(getattr(self, f"conv{i + 1}")(x))
            if i in (1, 3, 4):
                x = F.max_pool2d(x, 2)
        x = self.drop(F.relu(self.fc6(x.flatten(1))))
        x = self.drop(F.relu(self.fc7(x)))
        return self.head(x)


def formula(name, shape, fan_in):
    """Parameter `name` (ordinal k in sorted order): bound * sin(1.3 i + 0.7 k + 0.1)."""
    k = ORDER.index(name)
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.float64)
    v = torch.sin(1.3 * i + 0.7 * k + 0.1) / math.sqrt(fan_in)
    return v.to(torch.float32).reshape(shape)


for arch, cls in [("lenet", LeNet), ("convnet8", ConvNet8)]:
    torch.manual_seed(0)
    out = os.path.join(root, f"crates/dtl-backbones/tests/fixtures/{arch}_pytorch.json")
    net = cls().eval()
    ORDER = sorted(n for n, _ in net.named_parameters())
    with torch.no_grad():
        for name, p in net.named_parameters():
            layer = name.split(".")[0]
            w = dict(net.named_parameters())[layer + ".weight"]
            fan_in = math.prod(w.shape[1:])
            p.copy_(formula(name, p.shape, fan_in))

    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()

    rng = torch.Generator().manual_seed(0)
    grads = {}
    for name, p in net.named_parameters():
        g = p.grad.flatten().double()
        entry = {"shape": list(p.shape), "sum_sq": float((g * g).sum())}
        if g.numel() <= 5000:
            entry["values"] = g.tolist()
        else:
            idx = torch.randint(0, g.numel(), (64,), generator=rng)
            entry["indices"] = idx.tolist()
            entry["values"] = g[idx].tolist()
        grads[name] = entry

    json.dump(
        {
            "torch_version": torch.__version__,
            "labels": labels,
            "param_order": ORDER,
            "logits": logits.detach().double().flatten().tolist(),
            "loss": float(loss),
            "grads": grads,
        },
        open(out, "w"),
        indent=1,
    )
    print("wrote", out, "loss", float(loss))
