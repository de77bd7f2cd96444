#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench`: the workloads W1-W4 (and R18T / R18E, ResNet-18 at 224x224)
of crates/dtl/benches/workloads.rs with
the same initial weights and batches (read from the safetensors files `prepare` wrote).

Usage: python scripts/bench_torch.py --workload W1 --dir DIR [--steps N] [--warmup N] [--threads T] [--device cpu|cuda]
Prints `RESULT workload=W1 impl=torch median_ms=.. img_s=.. rss_mb=.. loss0=.. loss_last=..`."""
import argparse, json, resource, struct, time

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "I64": torch.int64, "U32": torch.int32}


def load_safetensors(path):
    """A minimal reader of the safetensors format (8-byte header length, JSON header, raw data)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = memoryview(raw)[8 + n:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
        out[name] = t
    return out


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(1024, 500)
        self.head = nn.Linear(500, 10)

    def features(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return F.relu(self.fc1(x.flatten(1)))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, w in enumerate(widths):
            blocks = []
            for i in range(2):
                blocks.append(Block(cin, w, 2 if s > 0 and i == 0 else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.head = nn.Linear(widths[3], 10)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
        return x.mean((2, 3))


def mmd2(xs, xt):
    """Biased MMD^2, 5 Gaussian bandwidths around the mean pairwise squared distance (detached)."""
    n = xs.shape[0]
    z = torch.cat([xs, xt])
    sq = (z * z).sum(1, keepdim=True)
    d2 = F.relu(sq + sq.t() - 2 * z @ z.t())
    m = 2 * n
    base = d2.detach().sum() / (m * m - m)
    k = sum(torch.exp(-d2 / (base * 2 * mult)) for mult in (0.25, 0.5, 1.0, 2.0, 4.0))
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--dir", default="target/bench")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (scripts/gpu-check.sh)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    t = load_safetensors(f"{a.dir}/{a.workload}.safetensors")
    if a.workload in ("W1", "W2"):
        model = LeNet()
    elif a.workload.startswith("R18"):
        model = ResNet((64, 128, 256, 512))
    else:
        model = ResNet()
    state = {k: v for k, v in t.items() if not k.startswith("input.")}
    missing = model.load_state_dict(state, strict=False)
    # PyTorch keeps a batch counter dtl does not store.
    assert not missing.unexpected_keys and all(k.endswith("num_batches_tracked") for k in missing.missing_keys), missing
    model.to(dev)
    x, y = t["input.x"].to(dev), t["input.y"].long().to(dev)
    xt = t.get("input.xt")
    xt = None if xt is None else xt.to(dev)
    times, losses = [], []
    if a.workload in ("W4", "R18E"):
        model.eval()
        with torch.no_grad():
            for i in range(a.warmup + a.steps):
                t0 = time.perf_counter()
                model.head(model.features(x)).sum().item()
                sync()
                if i >= a.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            fs = model.features(x)
            loss = F.cross_entropy(model.head(fs), y)
            if xt is not None:
                loss = loss + mmd2(fs, model.features(xt))
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync()
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    nan = float("nan")
    print(
        f"RESULT workload={a.workload} impl=torch median_ms={times[len(times) // 2]:.2f} "
        f"img_s={x.shape[0] / (times[len(times) // 2] / 1e3):.1f} rss_mb={rss:.1f} "
        f"loss0={losses[0] if losses else nan} loss_last={losses[-1] if losses else nan}"
    )


if __name__ == "__main__":
    main()
