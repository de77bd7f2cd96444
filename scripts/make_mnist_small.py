#!/usr/bin/env python3
"""Writes dtl's bundled MNIST subset: the first 2,000 training and first 500 test images of MNIST
(with their labels) as gzip'd IDX files, byte-for-byte prefixes of the canonical IDX bodies with
adjusted counts. Usage: scripts/make_mnist_small.py MNIST_DIR OUT_DIR"""
import gzip, struct, sys, os

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for prefix, n in (("train", 2000), ("t10k", 500)):
    for kind, header, per in (("images-idx3-ubyte", 16, 784), ("labels-idx1-ubyte", 8, 1)):
        name = f"{prefix}-{kind}.gz"
        data = gzip.open(os.path.join(src, name)).read()
        head = bytearray(data[:header])
        struct.pack_into(">I", head, 4, n)
        body = data[header:header + n * per]
        # mtime=0 makes the gzip bytes reproducible
        with open(os.path.join(out, name), "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0, filename="") as g:
                g.write(bytes(head) + body)
