#!/usr/bin/env python3
"""The peer library's side of `cargo xtask bench --strategies`: one epoch of a strategy on MNIST ->
USPS with pytorch-adapt 0.0.83's own hooks (its code, run as it is), on the same data dtl trains on
and with dtl's LeNet, discriminator and optimizer settings, timed like dtl's `seconds_per_epoch`
(training steps only; loading and evaluation excluded).

Usage: python scripts/bench_pytorch_adapt.py --strategy source-only|dann|dan|adda --data FILE
           [--iters N] [--batch 128] [--seed 0] [--threads T]

FILE is `digits.safetensors` from `cargo bench -p dtl --bench workloads -- prepare-digits`
(MNIST's training split, USPS's training images and test split as `dtl train` loads them).
Prints `RESULT strategy=.. impl=pytorch-adapt epoch_s=.. acc=.. rss_mb=.. iters=..`, where `acc`
is the target test accuracy after the timed epoch (the last epoch; no model selection).

- source-only: `ClassifierHook`.
- dann: `DANNHook` (gradient reversal weight 1, a 500-500 discriminator on the features).
- dan: `AlignerPlusCHook` with `MMDLoss(kernel_scales=2^-2..2^2 (5), mmd_type="quadratic")`: the
  biased multi-kernel MMD on the features and on the softmax outputs, as dtl's `dan` defaults.
- adda: one untimed epoch of source training (`ClassifierHook`), then the timed epoch of
  `ADDAHook` (target encoder from the source encoder, Adam 2e-4 with betas 0.5 / 0.999), as dtl's
  `adda --source-epochs 1 --epochs 2`, whose second epoch is timed.
"""
import argparse, copy, os, resource, sys, time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import load_safetensors  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
from pytorch_adapt.hooks import ADDAHook, AlignerPlusCHook, ClassifierHook, DANNHook  # noqa: E402
from pytorch_adapt.layers import MMDLoss  # noqa: E402
from pytorch_adapt.layers.utils import get_kernel_scales  # noqa: E402
from pytorch_adapt.models import Discriminator  # noqa: E402


class LeNet(nn.Module):
    """dtl's `lenet` backbone: conv 20 5x5, max-pool 2, ReLU, conv 50 5x5, channel dropout 0.5,
    max-pool 2, ReLU, fc 500, ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(800, 500)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        return F.relu(self.fc1(x.flatten(1)))


def sgd(*models):
    params = [p for m in models for p in m.parameters()]
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def batches(n_src, n_tgt, batch, iters, gen):
    """`iters` source batches from one permutation of the source (the last one partial when the
    source runs out, as dtl's), target batches of the same size from permutations of the target
    drawn afresh whenever one runs out."""
    src = torch.randperm(n_src, generator=gen)
    tgt, at = torch.randperm(n_tgt, generator=gen), 0
    for i in range(iters):
        s = src[i * batch:(i + 1) * batch]
        # A target batch as large as the source batch (ADDA's hook pairs them element by element).
        if at + len(s) > n_tgt:
            tgt, at = torch.randperm(n_tgt, generator=gen), 0
        yield s, tgt[at:at + len(s)]
        at += len(s)


def epoch(hook, models, data, args, gen):
    xs, ys, xt = data["source.x"], data["source.y"], data["target.x"]
    for m in models.values():
        m.train()
    t0 = time.perf_counter()
    for si, ti in batches(len(xs), len(xt), args.batch, args.iters, gen):
        n = len(si)
        inputs = {
            "src_imgs": xs[si],
            "src_labels": ys[si],
            "target_imgs": xt[ti],
            "src_domain": torch.zeros(n),
            "target_domain": torch.ones(len(ti)),
        }
        hook({**models, **inputs})
    return time.perf_counter() - t0


def accuracy(encoder, head, x, y):
    encoder.eval()
    head.eval()
    with torch.no_grad():
        pred = torch.cat([head(encoder(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", required=True, choices=["source-only", "dann", "dan", "adda"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--iters", type=int, default=468)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = load_safetensors(args.data)
    G, C = LeNet(), nn.Linear(500, 10)
    models = {"G": G, "C": C}
    if args.strategy == "source-only":
        hook = ClassifierHook(opts=[sgd(G, C)])
    elif args.strategy == "dann":
        D = Discriminator(in_size=500, h=500)
        models["D"] = D
        hook = DANNHook(opts=[sgd(G, C, D)])
    elif args.strategy == "dan":
        scales = get_kernel_scales(low=-2, high=2, num_kernels=5)
        hook = AlignerPlusCHook(opts=[sgd(G, C)], loss_fn=MMDLoss(kernel_scales=scales, mmd_type="quadratic"))
    else:
        epoch(ClassifierHook(opts=[sgd(G, C)]), models, data, args, gen)
        T, D = copy.deepcopy(G), Discriminator(in_size=500, h=500)
        models.update({"T": T, "D": D})
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))  # noqa: E731
        hook = ADDAHook(g_opts=[adam(T)], d_opts=[adam(D)])
    seconds = epoch(hook, models, data, args, gen)
    encoder = models.get("T", G)
    acc = accuracy(encoder, C, data["test.x"], data["test.y"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT strategy={args.strategy} impl=pytorch-adapt epoch_s={seconds:.3f} acc={acc:.4f} "
        f"rss_mb={rss:.1f} iters={args.iters}"
    )


if __name__ == "__main__":
    main()
