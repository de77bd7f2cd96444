#!/usr/bin/env python3
"""Writes dtl's bundled digits as image folders, to try the `folder:PATH` workflow end to end.

OUT/mnist/{train,test}/<class>/*.png   the bundled MNIST subset (2,000 + 500 images, 28x28)
OUT/optdigits/<class>/*.{png,jpg}      UCI optdigits (1,797 images, 8x8, values x 16; odd rows as JPEG)

Classes are named zero .. nine. Needs Pillow.

Usage: python scripts/export_digit_folders.py OUT"""
import csv
import gzip
import io
import os
import sys

from PIL import Image

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates/dtl-data/bundled")
out = sys.argv[1]
names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def mnist(split, images, labels):
    x = gzip.open(os.path.join(root, "mnist-small", images)).read()[16:]
    y = gzip.open(os.path.join(root, "mnist-small", labels)).read()[8:]
    for i, label in enumerate(y):
        d = os.path.join(out, "mnist", split, names[label])
        os.makedirs(d, exist_ok=True)
        Image.frombytes("L", (28, 28), x[i * 784 : (i + 1) * 784]).save(os.path.join(d, f"{i:05d}.png"))


mnist("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
mnist("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
rows = csv.reader(io.TextIOWrapper(gzip.open(os.path.join(root, "optdigits", "digits.csv.gz"))))
for i, row in enumerate(rows):
    v = [int(float(a)) for a in row]
    pixels = bytes(min(255, p * 16) for p in v[:64])
    d = os.path.join(out, "optdigits", names[v[64]])
    os.makedirs(d, exist_ok=True)
    Image.frombytes("L", (8, 8), pixels).save(os.path.join(d, f"{i:05d}.{'jpg' if i % 2 else 'png'}"))
