#!/usr/bin/env python3
"""Random gets from a tenstore LMDB store with Python's `lmdb` and
`webdataset.tenbin.decode_buffer`: the Python peer of benches/store.rs
(figure A2). Run by that bench; by hand:

    .venv/bin/python benches/py/lmdb_get.py --store DIR --keys FILE --rounds 5

The store holds samples of u1 3x64x64 "image", f4 [10] "logits", i8 [1]
"label". FILE holds the keys to get in one round, one per line, in the
order to get them; the Rust side gets the same keys, also after one untimed
round. Every get decodes the value and touches one element of each array,
as the Rust side does:

    v = txn.get(key); a = tenbin.decode_buffer(v)
    a[0][2, 63, 63], a[1][9], a[2][0]

Two variants, one read transaction for all gets of a round (as a loader
would hold one):
  bytes     txn.get -> bytes (the default: lmdb copies the value)
  buffers   env.begin(buffers=True): txn.get -> memoryview, no copy

Prints one JSON object per variant: {"name", "ops", "round_s": [...]}.
"""

import argparse
import json
import time

import lmdb
from webdataset import tenbin


def one_round(env, keys, buffers):
    acc = 0
    start = time.perf_counter()
    with env.begin(buffers=buffers) as txn:
        for k in keys:
            a = tenbin.decode_buffer(txn.get(k))
            acc += int(a[0][2, 63, 63]) + int(a[1][9]) + int(a[2][0])
    return time.perf_counter() - start, acc


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--keys", required=True)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with open(args.keys, "rb") as f:
        keys = [line.rstrip(b"\n") for line in f if line.strip()]
    env = lmdb.open(args.store, readonly=True, lock=True, max_readers=254,
                    subdir=True, map_size=1 << 30)
    for name, buffers in (("bytes", False), ("buffers", True)):
        one_round(env, keys, buffers)  # untimed, as the Rust side's first round
        times = []
        for _ in range(args.rounds):
            t, _ = one_round(env, keys, buffers)
            times.append(t)
        print(json.dumps({"name": name, "ops": len(keys), "round_s": times}), flush=True)


if __name__ == "__main__":
    main()
