"""The values of `tenstore demo`'s samples (src/bin/tenstore/demo.rs), for
the scripts that check what `tenstore serve` and `tenstore push` hand out.

Sample i, keyed "sample-%08d" % i, holds three arrays:
  image  u1 [3, 64, 64]  (i*31 + c*7 + y*3 + x) % 251
  logits f4 [10]         float32(i) * 0.5 - k
  label  i8 [1]          i % 10
"""

import numpy as np

NAMES = ["image", "logits", "label"]
_C, _Y, _X = np.indices((3, 64, 64))


def key(i):
    return b"sample-%08d" % i


def expected(i):
    """The arrays of sample i, in order."""
    image = ((i * 31 + _C * 7 + _Y * 3 + _X) % 251).astype(np.uint8)
    logits = np.float32(i) * np.float32(0.5) - np.arange(10, dtype=np.float32)
    label = np.array([i % 10], dtype=np.int64)
    return [image, logits, label]


def index_of(arrays):
    """The sample number of decoded arrays (logits[0] is i / 2)."""
    return int(round(float(arrays[1][0]) * 2))


def check(where, i, arrays, names):
    """Raise AssertionError unless `arrays` named `names` are sample i's."""
    if not (list(names) == NAMES):
        raise AssertionError(f"{where}: names {names}")
    for name, got, want in zip(NAMES, arrays, expected(i)):
        if not (got.dtype == want.dtype):
            raise AssertionError(f"{where} {name}: dtype {got.dtype}, expected {want.dtype}")
        if not (got.shape == want.shape):
            raise AssertionError(f"{where} {name}: shape {got.shape}, expected {want.shape}")
        bad = np.nonzero(got.reshape(-1) != want.reshape(-1))[0]
        if not (bad.size == 0):
            raise AssertionError(
                f"{where} {name}: {bad.size} elements differ, first at {int(bad[0])}: "
                f"{got.reshape(-1)[bad[0]]!r} != {want.reshape(-1)[bad[0]]!r}"
            )
