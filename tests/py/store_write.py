"""Python writes a plain LMDB environment of tenbin values; tenstore reads it.

usage: store_write.py STORE EXPECTED.json SEED

Makes STORE with `lmdb.open(STORE, map_size=...)` (no tenstore.json: a plain
environment, as any Python user makes one) and puts, in random order, samples
under UTF-8 text keys (ASCII, accented, CJK, emoji, spaces, slashes, up to
the 511-byte limit), each value `tenbin.encode_buffer(arrays, infos=names)`
of 1 to 4 random arrays of the reference dtypes: 0-d and empty arrays
included, values under 2 KB and over 4 KB. Some samples are then overwritten
and some deleted, as a user would.

EXPECTED.json holds the final state: {"samples": [{"key": TEXT,
"sha256": HEX of the stored value, "arrays": [entry, ...]}, ...]} in the
order they were put (not key order). Prints "wrote N".
"""

import hashlib
import json
import sys

import lmdb
import numpy as np

from tenbin_util import CODES, FLOAT_BITS, tenbin, to_entry

NAMES = ["", "a", "img", "label", "abcdefgh", "x_9", "a b.c-!?"]
KEY_STEMS = [
    "sample/{:05d}",
    "échantillon-{}",
    "样本_{}",
    "key with spaces {}",
    "🦀/{}",
    "{}",
    "a/b/c/d.{}",
]


def random_array(rng, code, shape):
    dtype = np.dtype(tenbin.short_to_long[code])
    n = int(np.prod(shape, dtype=np.int64))
    if code in FLOAT_BITS:
        top = 3 if code == "f2" else 6
        flat = (rng.standard_normal(n) * 10.0 ** rng.uniform(-top, top, n)).astype(dtype)
        fi = np.finfo(dtype)
        specials = np.array([-0.0, fi.smallest_subnormal, fi.max, fi.min, 1.0], dtype)
    else:
        ii = np.iinfo(dtype)
        flat = rng.integers(ii.min, ii.max, size=n, dtype=dtype, endpoint=True)
        specials = np.array([ii.min, ii.max, 0], dtype)
    if n >= 8:
        flat[: len(specials)] = specials
    return flat.reshape(shape)


def random_shape(rng, itemsize, large):
    """A shape of rank 0 to 4 whose data is under about 1.5 KB, or (large)
    between 4 and 40 KB."""
    if large:
        count = int(rng.integers(4200, 40000)) // itemsize
        return (count,) if rng.integers(2) else (count // 8, 8)
    rank = int(rng.integers(0, 5))
    if rank == 0:
        return ()
    dims = [int(rng.integers(0, 6)) for _ in range(rank)]
    if rng.integers(8) == 0:
        dims[0] = 0
    while np.prod(dims, dtype=np.int64) * itemsize > 1500:
        dims[int(np.argmax(dims))] //= 2
    return tuple(dims)


def random_sample(rng, large):
    arrays, names = [], []
    for k in range(int(rng.integers(1, 5))):
        code = CODES[int(rng.integers(len(CODES)))]
        itemsize = np.dtype(tenbin.short_to_long[code]).itemsize
        arrays.append(random_array(rng, code, random_shape(rng, itemsize, large and k == 0)))
        names.append(NAMES[int(rng.integers(len(NAMES)))])
    return arrays, names


def main():
    store, manifest, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    keys = [KEY_STEMS[i % len(KEY_STEMS)].format(i) for i in range(150)]
    keys.append("k" * 511)  # LMDB's longest key
    keys.append("é" * 255 + "x")  # 511 bytes of UTF-8
    for k in keys:
        if not (0 < len(k.encode("utf-8")) <= 511):
            raise AssertionError(k)
    order = [int(i) for i in rng.permutation(len(keys))]

    env = lmdb.open(store, map_size=64 << 20, subdir=True)
    final = {}
    with env.begin(write=True) as txn:
        for n, i in enumerate(order):
            arrays, names = random_sample(rng, large=n % 3 == 0)
            value = tenbin.encode_buffer(arrays, infos=names)
            if not txn.put(keys[i].encode("utf-8"), value):
                raise AssertionError('failed: txn.put(keys[i].encode("utf-8"), value)')
            final[keys[i]] = (arrays, names, value)
    # Later transactions: overwrite some samples (small <-> large), delete some.
    with env.begin(write=True) as txn:
        for n, i in enumerate(order[:20]):
            arrays, names = random_sample(rng, large=n % 2 == 0)
            value = tenbin.encode_buffer(arrays, infos=names)
            txn.put(keys[i].encode("utf-8"), value, overwrite=True)
            final[keys[i]] = (arrays, names, value)
    with env.begin(write=True) as txn:
        for i in order[20:30]:
            if not txn.delete(keys[i].encode("utf-8")):
                raise AssertionError('failed: txn.delete(keys[i].encode("utf-8"))')
            del final[keys[i]]
    with env.begin() as txn:
        if not (txn.stat()["entries"] == len(final)):
            raise AssertionError('failed: txn.stat()["entries"] == len(final)')
    env.close()

    samples = []
    for i in order:
        if keys[i] not in final:
            continue
        arrays, names, value = final[keys[i]]
        samples.append(
            {
                "key": keys[i],
                "sha256": hashlib.sha256(value).hexdigest(),
                "arrays": [to_entry(n, a) for n, a in zip(names, arrays)],
            }
        )
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump({"seed": seed, "samples": samples}, f)
    print(f"wrote {len(samples)}")


if __name__ == "__main__":
    main()
