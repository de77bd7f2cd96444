"""PyTorch side of `cargo run --release -p dtl --example conv_layers`: the same convolution shapes
(ResNet-18 at widths 16-128 on 3x32x32, batch 256, bias and ReLU, no autograd) and the stem's
max-pooling, median of REPS calls each, on PyTorch's CPU threads (2 unless --threads).

Usage: python scripts/conv_layers_torch.py [REPS] [--threads T]"""
import argparse
import time

import torch
import torch.nn.functional as F

LAYERS = [("stem", 3, 32, 16, 7, 2, 3, 1), ("s1", 16, 8, 16, 3, 1, 1, 4), ("s2a", 16, 8, 32, 3, 2, 1, 1),
          ("s2", 32, 4, 32, 3, 1, 1, 3), ("s3a", 32, 4, 64, 3, 2, 1, 1), ("s3", 64, 2, 64, 3, 1, 1, 3),
          ("s4a", 64, 2, 128, 3, 2, 1, 1), ("s4", 128, 1, 128, 3, 1, 1, 3)]
BATCH = 256


def median_ms(reps, f):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return ts[reps // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("reps", nargs="?", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    total = 0.0
    with torch.no_grad():
        for name, c, side, o, k, s, pad, n in LAYERS:
            x = torch.rand(BATCH, c, side, side)
            w = torch.rand(o, c, k, k) * 0.2 - 0.1
            b = torch.rand(o) * 0.2 - 0.1
            m = median_ms(a.reps, lambda: F.relu(F.conv2d(x, w, b, stride=s, padding=pad)))
            total += m * n
            print(f"{name:5} {m:7.3f} ms x{n}")
        x = torch.rand(BATCH, 16, 16, 16)
        print(f"pool  {median_ms(a.reps, lambda: F.max_pool2d(x, 3, 2, 1)):7.3f} ms")
    print(f"convolutions {total:.2f} ms")


if __name__ == "__main__":
    main()
