"""Python writes, Rust reads.

usage: py_write.py OUTDIR SEED

Generates random arrays of every reference dtype (0-d scalars, ranks 1 to 9,
empty arrays, a 1 MiB+ array; names of 0, 1 and 8 characters) with a seeded
numpy RNG and writes them with the reference in every form:

    OUTDIR/sample.ten          tenbin.save
    OUTDIR/buffer.bin          tenbin.encode_buffer
    OUTDIR/frames/partNNN.bin  tenbin.encode_list (header, data, ...)
    OUTDIR/expected.json       every array, element by element
"""

import os
import sys

import numpy as np

from tenbin_util import CODES, FLOAT_BITS, tenbin, write_manifest

SHAPES = [
    (),
    (1,),
    (7,),
    (3, 5),
    (2, 3, 4),
    (0,),
    (3, 0, 2),
    (2, 1, 3, 1, 2, 1, 1, 2, 1),
]
# Empty, 1 character, 8 characters (the most a header word holds), odd ones.
NAMES = ["", "a", "abcdefgh", "x_9", "a b.c-!?", "Z"]


def specials(code):
    """Edge values put at the start of the larger arrays."""
    dtype = np.dtype(tenbin.short_to_long[code])
    if code in FLOAT_BITS:
        fi = np.finfo(dtype)
        return np.array([-0.0, fi.smallest_subnormal, fi.tiny, fi.max, fi.min, -fi.smallest_subnormal, 1.0], dtype)
    ii = np.iinfo(dtype)
    return np.array([ii.min, ii.max, 0, 1, ii.max // 2 + 1, ii.min + 1], dtype)


def random_array(rng, code, shape):
    dtype = np.dtype(tenbin.short_to_long[code])
    n = int(np.prod(shape, dtype=np.int64))
    if code in FLOAT_BITS:
        top = 3 if code == "f2" else 6
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-top, top, n)
        flat = x.astype(dtype)
    else:
        ii = np.iinfo(dtype)
        flat = rng.integers(ii.min, ii.max, size=n, dtype=dtype, endpoint=True)
    s = specials(code)
    if n >= 15:
        flat[: len(s)] = s
    return flat.reshape(shape)


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    arrays, names = [], []
    for code in CODES:
        for shape in SHAPES:
            arrays.append(random_array(rng, code, shape))
            names.append(NAMES[len(names) % len(NAMES)])
    # Larger than the Rust stream reader's first 1 MiB allocation
    # (1,052,672 bytes), with few elements to keep the JSON small.
    arrays.insert(40, random_array(rng, "i8", (2, 256, 257)))
    names.insert(40, "big")

    tenbin.save(os.path.join(out, "sample.ten"), *arrays, infos=names)
    with open(os.path.join(out, "buffer.bin"), "wb") as f:
        f.write(tenbin.encode_buffer(arrays, infos=names))
    frames_dir = os.path.join(out, "frames")
    os.mkdir(frames_dir)
    for i, frame in enumerate(tenbin.encode_list(arrays, infos=names)):
        with open(os.path.join(frames_dir, f"part{i:03d}.bin"), "wb") as f:
            f.write(frame)
    write_manifest(os.path.join(out, "expected.json"), seed, names, arrays)
    print(f"wrote {len(arrays)} arrays")


if __name__ == "__main__":
    main()
