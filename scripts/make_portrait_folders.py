#!/usr/bin/env python3
"""A small two-group case laid out as the portrait case is, made from dtl's bundled digits, for
README's "Your own photos" walkthrough: a few hundred source images, a target of 92 images in
the file forms real collections use, class folders named otherwise on each side, and a CSV of
file attributes for `dtl audit`.

OUT/source/{train,test}/{3,5,8}/*.png   bundled MNIST 3s, 5s and 8s: 100 + 40 per class, 28x28
OUT/target/{three,five,eight}/*         92 UCI optdigits 3s, 5s and 8s (8x8, values x 16): even
                                        files 8-bit palette TIFF, odd files progressive JPEG
OUT/target-attributes.csv               path (relative to OUT/target), format

The classes stand in for expressions (three classes, as happy / sad / angry), the two digit
collections for two groups of people. Needs Pillow.

Usage: python scripts/make_portrait_folders.py OUT"""
import csv
import gzip
import io
import os
import sys

from PIL import Image

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates/dtl-data/bundled")
out = sys.argv[1]
classes = {3: "three", 5: "five", 8: "eight"}


def mnist(split, images, labels, per_class):
    x = gzip.open(os.path.join(root, "mnist-small", images)).read()[16:]
    y = gzip.open(os.path.join(root, "mnist-small", labels)).read()[8:]
    taken = {c: 0 for c in classes}
    for i, label in enumerate(y):
        if label in classes and taken[label] < per_class:
            d = os.path.join(out, "source", split, str(label))
            os.makedirs(d, exist_ok=True)
            Image.frombytes("L", (28, 28), x[i * 784:(i + 1) * 784]).save(os.path.join(d, f"{i:05d}.png"))
            taken[label] += 1


mnist("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 100)
mnist("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 40)

rows = csv.reader(io.TextIOWrapper(gzip.open(os.path.join(root, "optdigits", "digits.csv.gz"))))
attributes = []
kept = 0
for i, row in enumerate(rows):
    v = [int(float(a)) for a in row]
    if v[64] not in classes or kept == 92:
        continue
    img = Image.frombytes("L", (8, 8), bytes(min(255, p * 16) for p in v[:64]))
    name = classes[v[64]]
    os.makedirs(os.path.join(out, "target", name), exist_ok=True)
    if kept % 2 == 0:
        rel = f"{name}/{i:05d}.tif"
        img.convert("P").save(os.path.join(out, "target", rel))
        fmt = "palette TIFF"
    else:
        rel = f"{name}/{i:05d}.jpg"
        img.save(os.path.join(out, "target", rel), quality=90, progressive=True)
        fmt = "progressive JPEG"
    attributes.append((rel, fmt))
    kept += 1
with open(os.path.join(out, "target-attributes.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "format"])
    w.writerows(attributes)
print(f"wrote {out}/source (300 + 120 images), {out}/target ({kept} images) and {out}/target-attributes.csv",
      file=sys.stderr)
