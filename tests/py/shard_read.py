"""Reads a tenstore shard store's .ten shards with webdataset.tenbin.load
alone and checks every record against the values the Rust test wrote.

usage: shard_read.py STORE_DIR DELETED_KEY
Prints "ok SAMPLES TOMBSTONES SHARDS"; exits 1 on any mismatch.
"""
import glob
import os
import sys

import numpy as np
from webdataset import tenbin


def expected(i):
    n = 64 + (i * 997) % 6000
    blob = ((np.arange(n, dtype=np.uint64) * 31 + i) % 256).astype(np.uint8)
    return {"blob": blob, "label": np.array([i], dtype=np.int64)}


def main():
    store, deleted = sys.argv[1], sys.argv[2]
    shards = sorted(glob.glob(os.path.join(store, "*.ten")))
    samples = {}
    tombstones = []
    for path in shards:
        arrays, names = tenbin.load(path, infos=True)
        current = None
        for a, name in zip(arrays, names):
            if name == "__key__":
                current = bytes(a).decode()
                samples[current] = {}
            elif name == "__tomb__":
                tombstones.append(bytes(a).decode())
                current = None
            else:
                if current is None:
                    sys.exit(f"{path}: array {name!r} outside a record")
                samples[current][name] = a
    for key, tensors in samples.items():
        want = expected(int(key[1:]))
        if sorted(tensors) != sorted(want):
            sys.exit(f"{key}: arrays {sorted(tensors)} != {sorted(want)}")
        for name, a in want.items():
            got = tensors[name]
            if got.dtype != a.dtype or got.shape != a.shape or not np.array_equal(got, a):
                sys.exit(f"{key}/{name}: values differ")
    if tombstones != [deleted]:
        sys.exit(f"tombstones {tombstones} != [{deleted!r}]")
    print("ok", len(samples), len(tombstones), len(shards))


if __name__ == "__main__":
    main()
