#!/usr/bin/env python3
"""Reference logits of torchvision's AlexNet and ResNet-18/34/50 for dtl's parity test.

Every tensor of each model's state dict is set by a closed formula that the Rust test computes
too, from the tensor's *published* name (so the fixture stores no weights): with
c = (sum of the name's UTF-8 bytes) mod 997 and, for flat index j, an integer hash (exact on
both sides; all arithmetic modulo 2^32)

    h = j * 2654435761 + c * 40503;  h ^= h >> 15;  h *= 2246822519;  h ^= h >> 13
    u_j = 2 h / 2^32 - 1   (uniform in [-1, 1), variance 1/3)

the tensors are

    conv / linear weight   sqrt(6 / fan_in) u_j   (He et al. 2015's variance 2 / fan_in)
    bias                   0.1 u_j
    batch-norm weight      0.6 + 0.1 u_j
    batch-norm bias        0.1 u_j
    running_mean           0.1 u_j
    running_var            1 + 0.5 u_j^2
    num_batches_tracked    0 (kept in the file: dtl must skip it)

The inputs are images in [0, 1], x_j = 0.5 + 0.5 sin(0.37 j) over the flat (B, 3, S, S) batch;
the models see them normalised with ImageNet's mean and std, as dtl's ImageNet backbones
normalise their input. Logits are computed in eval mode, in float64 and rounded to float32.

When timm is installed, the script also checks that timm's ResNets name every tensor as
torchvision does (dtl loads both through the same names).

Usage: /path/to/venv/bin/python scripts/make_backbone_fixture.py
Writes crates/dtl-backbones/tests/fixtures/torchvision_parity.json (tensor names and shapes)
and torchvision_parity.safetensors (logits), and crates/dtl-backbones/src/imagenet_classes.txt
(torchvision's ImageNet-1k class names, index order)."""
import json
import math
import os

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

root = os.path.join(os.path.dirname(__file__), "..")
out_dir = os.path.join(root, "crates/dtl-backbones/tests/fixtures")

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def formula(name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    c = sum(name.encode()) % 997
    m = np.uint64(0xFFFFFFFF)
    h = (np.arange(n, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(c * 40503)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & m
    h ^= h >> np.uint64(13)
    u = h.astype(np.float64) / 2.0**32 * 2.0 - 1.0
    leaf = name.rsplit(".", 1)[1]
    if leaf == "weight" and len(shape) >= 2:
        v = math.sqrt(6.0 / int(np.prod(shape[1:]))) * u
    elif leaf == "weight":  # batch norm
        v = 0.6 + 0.1 * u
    elif leaf in ("bias", "running_mean"):
        v = 0.1 * u
    elif leaf == "running_var":
        v = 1.0 + 0.5 * u * u
    else:
        raise ValueError(name)
    return v.reshape(shape)


def inputs(batch, size):
    n = batch * 3 * size * size
    x = 0.5 + 0.5 * np.sin(0.37 * np.arange(n, dtype=np.float64))
    return torch.from_numpy(x.reshape(batch, 3, size, size))


CASES = [
    ("alexnet", torchvision.models.alexnet, 224),
    ("alexnet", torchvision.models.alexnet, 127),
    ("resnet18", torchvision.models.resnet18, 64),
    ("resnet34", torchvision.models.resnet34, 64),
    ("resnet50", torchvision.models.resnet50, 64),
]

names = {}
logits = {}
for arch, build, size in CASES:
    model = build().double().eval()
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = torch.zeros_like(v)
        else:
            new[k] = torch.from_numpy(formula(k, tuple(v.shape))).to(torch.float64)
    model.load_state_dict(new)
    names[arch] = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    x = inputs(2, size)
    mean = torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    with torch.no_grad():
        y = model((x - mean) / std)
    logits[f"{arch}_{size}"] = y.float().contiguous()
    print(f"{arch} at {size}: logits {tuple(y.shape)}, max |logit| {y.abs().max().item():.3f}")

try:
    import timm

    for arch in ("resnet18", "resnet34", "resnet50"):
        t = {k: list(v.shape) for k, v in timm.create_model(arch).state_dict().items()}
        tv = {k: s for k, s, _ in names[arch]}
        tv_params = {k: s for k, s in tv.items() if not k.endswith("num_batches_tracked")}
        t_params = {k: s for k, s in t.items() if not k.endswith("num_batches_tracked")}
        assert t_params == tv_params, f"timm's {arch} names differ from torchvision's"
        print(f"timm {timm.__version__} {arch}: the same {len(t_params)} tensors as torchvision's")
except ImportError:
    print("timm not installed: name check skipped")

with open(os.path.join(out_dir, "torchvision_parity.json"), "w") as f:
    json.dump(
        {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cases": [[a, s] for a, _, s in CASES],
            "tensors": names,
        },
        f,
        indent=0,
    )
save_file(logits, os.path.join(out_dir, "torchvision_parity.safetensors"))

# ImageNet-1k class names in index order, for `dtl predict --backbone ... --pretrained ...`.
from torchvision.models._meta import _IMAGENET_CATEGORIES

assert len(_IMAGENET_CATEGORIES) == 1000 and len(set(_IMAGENET_CATEGORIES)) == 1000
with open(os.path.join(root, "crates/dtl-backbones/src/imagenet_classes.txt"), "w") as f:
    f.write("\n".join(_IMAGENET_CATEGORIES) + "\n")
