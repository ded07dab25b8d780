"""Shared helpers for the interop scripts: the reference tenbin (with its
uint32 table fixed) and the JSON description of arrays both sides use.

An entry of the JSON ("arrays": [...]) describes one array:

    {"name": "abc", "dtype": "f4", "shape": [2, 3],
     "values": [...],   # every element, flat, in C order
     "bits": [...]}     # float dtypes only: each element's bit pattern

Integers are exact JSON integers (full int64/uint64 range). Floats are the
float64 value of the element (for f2, of the half value); "bits" holds the
exact bit patterns because not every JSON reader parses a float64 back to the
same bits.
"""

import json
import sys
from importlib.metadata import version

import numpy as np
from webdataset import tenbin

# The reference's table misspells uint32 as "unit32", so it can neither write
# nor read u4. Fix the table (the code for uint32 is u4). The fix is for
# webdataset 1.0.2 (tests/py/requirements.txt): another version may have
# other tables, so it is refused rather than patched blindly.
WEBDATASET_VERSION = "1.0.2"
if version("webdataset") != WEBDATASET_VERSION:
    raise RuntimeError(
        f"tests/py needs webdataset=={WEBDATASET_VERSION} (the reference the "
        f"interop tests are written for), found {version('webdataset')}; "
        "install tests/py/requirements.txt"
    )
if tenbin.short_to_long.get("u4") != "unit32" or "uint32" in tenbin.long_to_short:
    raise RuntimeError(
        "webdataset.tenbin's uint32 entry is not the misspelling this patch fixes: "
        f"short_to_long['u4'] = {tenbin.short_to_long.get('u4')!r}"
    )
tenbin.long_to_short["uint32"] = "u4"
tenbin.short_to_long["u4"] = "uint32"

CODES = ["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]
FLOAT_BITS = {"f2": "<u2", "f4": "<u4", "f8": "<u8"}
UINT_OF_SIZE = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


class Mismatch(Exception):
    """An array that differs from what was expected."""


def code_of(a):
    """The tenbin code of an array's dtype."""
    return tenbin.long_to_short[a.dtype.name]


def to_entry(name, a):
    """The JSON entry for array `a` named `name`."""
    code = code_of(a)
    flat = np.ascontiguousarray(a).reshape(-1)
    entry = {"name": name, "dtype": code, "shape": [int(d) for d in a.shape]}
    if code in FLOAT_BITS:
        if not np.all(np.isfinite(flat)):
            raise ValueError(f"{name}: JSON cannot hold non-finite floats")
        entry["values"] = [float(x) for x in flat.astype(np.float64)]
        entry["bits"] = [int(b) for b in flat.view(FLOAT_BITS[code])]
    else:
        entry["values"] = [int(x) for x in flat]
    return entry


def from_entry(entry):
    """The array an entry describes, built exactly. Checks that the entry is
    consistent (element count, values against bits)."""
    code = entry["dtype"]
    if code not in CODES:
        raise Mismatch(f"entry {entry['name']!r}: unknown dtype code {code!r}")
    dtype = np.dtype(tenbin.short_to_long[code]).newbyteorder("<")
    shape = tuple(int(d) for d in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    values = entry["values"]
    if len(values) != count:
        raise Mismatch(f"entry {entry['name']!r}: {len(values)} values for shape {shape}")
    if code in FLOAT_BITS:
        bits = entry["bits"]
        if len(bits) != count:
            raise Mismatch(f"entry {entry['name']!r}: {len(bits)} bit patterns for shape {shape}")
        a = np.array(bits, dtype=FLOAT_BITS[code]).view(dtype)
        as_f8 = a.astype(np.float64)
        v = np.array(values, dtype=np.float64)
        bad = np.nonzero(as_f8.view("<u8") != v.view("<u8"))[0]
        if bad.size:
            i = int(bad[0])
            raise Mismatch(
                f"entry {entry['name']!r}: value {values[i]!r} at {i} disagrees with bits {bits[i]:#x}"
            )
    else:
        # numpy refuses out-of-range Python ints (OverflowError).
        a = np.array(values, dtype=dtype)
    a = a.reshape(shape)
    if not (a.ndim == len(shape)):
        raise AssertionError('failed: a.ndim == len(shape)')
    return a


def compare(where, got, got_name, entry):
    """Raise Mismatch unless array `got` named `got_name` is what `entry`
    describes: name, dtype, shape, and every element bit for bit."""
    want = from_entry(entry)
    if got_name != entry["name"]:
        raise Mismatch(f"{where}: name {got_name!r}, expected {entry['name']!r}")
    if got.dtype.name not in tenbin.long_to_short:
        raise Mismatch(f"{where}: unexpected numpy dtype {got.dtype}")
    if code_of(got) != entry["dtype"]:
        raise Mismatch(f"{where}: dtype {code_of(got)}, expected {entry['dtype']}")
    got_shape = tuple(int(d) for d in got.shape)
    if got_shape != want.shape:
        raise Mismatch(f"{where}: shape {got_shape}, expected {want.shape}")
    g = np.ascontiguousarray(got).reshape(-1)
    w = want.reshape(-1)
    uint = UINT_OF_SIZE[w.itemsize]
    bad = np.nonzero(g.view(uint) != w.view(uint))[0]
    if bad.size:
        shown = ", ".join(f"[{int(i)}] got {g[i]!r} expected {w[i]!r}" for i in bad[:5])
        raise Mismatch(f"{where}: {bad.size} of {w.size} elements differ: {shown}")
    # Equal bits imply equal values; check numpy's notion of equality too.
    if not np.array_equal(g, w):
        raise Mismatch(f"{where}: np.array_equal disagrees")


def load_manifest(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(path, seed, names, arrays):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"seed": seed, "arrays": [to_entry(n, a) for n, a in zip(names, arrays)]}, f)


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)
