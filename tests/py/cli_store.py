"""The Python side of tests/cli_store.rs: numpy writes the inputs the
`tenstore` CLI reads, and checks what it writes back.

usage:
    cli_store.py gen dtypes OUT    every .npy dtype, shapes 0-d to rank 6, empty
    cli_store.py gen odd OUT       big-endian, Fortran-ordered, .npy v2/v3 arrays
    cli_store.py gen bad OUT       refused dtypes, damaged .npy files, odd names
    cli_store.py gen import OUT    a directory, a .tar and a .tar.gz shard
    cli_store.py check-npy OUT/manifest.json GOTROOT
        GOTROOT/KEY/ (from `tenstore get STORE KEY --npy`) holds exactly the
        expected NAME.npy files, each equal (dtype, shape, bits) to the input
    cli_store.py check-export OUT/manifest.json DIR
        DIR (from `tenstore export`) holds exactly one escaped KEY.ten per
        expected sample, each decoding to the expected tensors
    cli_store.py corrupt STORE GOODKEY
        writes two damaged values with Python's lmdb: "bad" (not tenbin) and
        "trunc" (GOODKEY's value less its last 8 bytes)

`gen` writes OUT/manifest.json:
    {"samples": [{"key", "inputs": [ARG...], "ten": expected buffer file,
                  "tensors": [{"name", "dtype", "shape", "nbytes",
                               "sha256", "npy": a file holding the array,
                               "file": NAME.npy that `get --npy` writes}]}],
     ...extra fields per kind}
Failures print "MISMATCH: ..." on stderr and exit 1.
"""

import hashlib
import io
import json
import os
import struct
import sys
import tarfile

import numpy as np
from webdataset import tenbin

# The reference misspells uint32; fix its table (as tenbin_util does).
tenbin.long_to_short["uint32"] = "u4"
tenbin.short_to_long["u4"] = "uint32"

REFERENCE = ["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]
CODES = REFERENCE + ["b1", "c8", "c16"]
CODE_OF = {np.dtype(tenbin.short_to_long[c]).name: c for c in REFERENCE}
CODE_OF.update({"bool": "b1", "complex64": "c8", "complex128": "c16"})
NUMPY_OF = {c: n for n, c in CODE_OF.items()}
MAGIC = b"~TenBin~"


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def canonical(a):
    """The array as tenbin holds it: little-endian, C order."""
    a = np.asarray(a)
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
    return np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")


def code_of(a):
    return CODE_OF[np.asarray(a).dtype.name]


# --- an independent tenbin encoder and decoder ------------------------------


def chunk(b):
    pad = (64 - len(b) % 64) % 64
    return MAGIC + struct.pack("<q", len(b)) + b + b"\0" * pad


def word(s):
    b = s.encode("ascii")
    if not (len(b) <= 8):
        raise AssertionError(s)
    return b.ljust(8, b"\0")


def encode(arrays, names):
    """tenbin.encode_buffer's bytes, for every dtype and 0-d arrays too."""
    out = bytearray()
    for a, name in zip(arrays, names):
        a = canonical(a)
        header = word(code_of(a)) + word(name) + struct.pack("<q", a.ndim)
        header += b"".join(struct.pack("<q", d) for d in a.shape)
        out += chunk(header) + chunk(a.tobytes())
    return bytes(out)


def decode(buf):
    """(names, arrays) of a tenbin buffer, strictly."""
    names, arrays, off = [], [], 0

    def take():
        nonlocal off
        if buf[off : off + 8] != MAGIC:
            fail(f"no magic at byte {off}")
        (n,) = struct.unpack("<q", buf[off + 8 : off + 16])
        data = buf[off + 16 : off + 16 + n]
        if len(data) != n:
            fail(f"chunk at byte {off} is truncated")
        pad = (64 - n % 64) % 64
        if buf[off + 16 + n : off + 16 + n + pad] != b"\0" * pad:
            fail(f"bad padding after byte {off}")
        off += 16 + n + pad
        return data

    while off < len(buf):
        header = take()
        data = take()
        code = header[:8].rstrip(b"\0").decode("ascii")
        name = header[8:16].rstrip(b"\0").decode("ascii")
        (ndim,) = struct.unpack("<q", header[16:24])
        shape = struct.unpack(f"<{ndim}q", header[24:])
        a = np.frombuffer(data, dtype=np.dtype(NUMPY_OF[code]).newbyteorder("<"))
        arrays.append(a.reshape(shape))
        names.append(name)
    return names, arrays


def same(where, got, want):
    """Equal dtype (as tenbin holds it), shape, values and bits."""
    want = canonical(want)
    if got.dtype != want.dtype:
        fail(f"{where}: dtype {got.dtype}, expected {want.dtype}")
    if got.shape != want.shape:
        fail(f"{where}: shape {got.shape}, expected {want.shape}")
    nan = want.dtype.kind in "fc"
    if not np.array_equal(got, want, equal_nan=nan):
        fail(f"{where}: values differ: {got!r} vs {want!r}")
    if got.tobytes() != want.tobytes():
        fail(f"{where}: bits differ")


# --- generating inputs ------------------------------------------------------


def random_array(rng, code, shape):
    dtype = np.dtype(NUMPY_OF[code])
    n = int(np.prod(shape, dtype=np.int64))
    if code == "b1":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind == "f":
        flat = (rng.standard_normal(n) * 100).astype(dtype)
        special = np.array([-0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).max], dtype)
        k = min(n, len(special))
        flat[:k] = special[:k]
    elif dtype.kind == "c":
        flat = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
        if n >= 2:
            flat[0] = complex(-0.0, np.inf)
            flat[1] = complex(np.nan, 1.5)
    else:
        ii = np.iinfo(dtype)
        flat = rng.integers(ii.min, ii.max, size=n, dtype=dtype, endpoint=True)
        k = min(n, 2)
        flat[:k] = np.array([ii.min, ii.max], dtype)[:k]
    return flat.reshape(shape)


SHAPES = {
    "scalar": (),
    "empty": (0,),
    "empty3": (3, 0, 2),
    "vec": (7,),
    "mat": (3, 5),
    "cube": (2, 3, 4),
    "rank6": (2, 1, 3, 1, 2, 2),
}


def describe(name, a, npy, file):
    a = canonical(a)
    return {
        "name": name,
        "dtype": code_of(a),
        "shape": [int(d) for d in a.shape],
        "nbytes": int(a.nbytes),
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
        "npy": npy,
        "file": file,
    }


def gen_dtypes(out):
    rng = np.random.default_rng(20240601)
    samples = []
    for code in CODES:
        d = os.path.join(out, code)
        os.makedirs(os.path.join(d, "ref"))
        inputs, tensors, arrays, names = [], [], [], []
        for name, shape in SHAPES.items():
            a = random_array(rng, code, shape)
            path = os.path.join(d, f"{name}.npy")
            np.save(path, a)
            inputs.append(path)
            tensors.append(describe(name, a, path, f"{name}.npy"))
            arrays.append(a)
            names.append(name)
        # NAME=PATH: a file stem too long for a name, a name of 8 bytes.
        a = random_array(rng, code, (4, 2))
        path = os.path.join(d, "a_file_stem_longer_than_8.npy")
        np.save(path, a)
        inputs.append(f"abcdefgh={path}")
        tensors.append(describe("abcdefgh", a, path, "abcdefgh.npy"))
        arrays.append(a)
        names.append("abcdefgh")
        # A .ten input: a named and an unnamed tensor, names kept.
        ten_arrays = [random_array(rng, code, (2, 2)), random_array(rng, code, (3,))]
        ten_names = ["fromten", ""]
        ten = os.path.join(d, "x.ten")
        with open(ten, "wb") as f:
            f.write(encode(ten_arrays, ten_names))
        if code in REFERENCE:
            # Our encoder writes what the reference writes.
            with open(ten, "rb") as f:
                if f.read() != bytes(tenbin.encode_buffer(ten_arrays, infos=ten_names)):
                    fail(f"{code}: our encoder disagrees with tenbin.encode_buffer")
            ref = os.path.join(d, "ref.ten")
            tenbin.save(ref, *ten_arrays, infos=ten_names)
            with open(ref, "rb") as f, open(ten, "rb") as g:
                if f.read() != g.read():
                    fail(f"{code}: our encoder disagrees with tenbin.save")
        inputs.append(ten)
        for i, (a, n) in enumerate(zip(ten_arrays, ten_names)):
            ref = os.path.join(d, "ref", f"{i}.npy")
            np.save(ref, a)
            idx = len(arrays)
            tensors.append(describe(n, a, ref, f"{n}.npy" if n else f"_{idx}.npy"))
            arrays.append(a)
            names.append(n)
        expected = os.path.join(d, "expected.ten")
        with open(expected, "wb") as f:
            f.write(encode(arrays, names))
        if code in REFERENCE:
            # The whole sample (0-d and empty arrays too) as the reference
            # encodes it.
            ref = bytes(tenbin.encode_buffer([canonical(a) for a in arrays], infos=names))
            with open(expected, "rb") as f:
                if f.read() != ref:
                    fail(f"{code}: our encoder disagrees with tenbin.encode_buffer")
        samples.append(
            {"key": f"dt-{code}", "inputs": inputs, "ten": expected, "single_ten": ten, "tensors": tensors}
        )
    return {"samples": samples}


def gen_odd(out):
    rng = np.random.default_rng(7)
    arrays = {
        "be_f4": random_array(rng, "f4", (3, 4)).astype(">f4"),
        "be_i8": random_array(rng, "i8", (5,)).astype(">i8"),
        "be_c16": random_array(rng, "c16", (2, 2)).astype(">c16"),
        "be_f2": random_array(rng, "f2", (6,)).astype(">f2"),
        "be_u4": random_array(rng, "u4", (2, 3)).astype(">u4"),
        "be_0d": np.array(-123456789, dtype=">i4"),
        "fo_f8": np.asfortranarray(random_array(rng, "f8", (3, 4, 5))),
        "fo_bei2": np.asfortranarray(random_array(rng, "i2", (4, 3)).astype(">i2")),
        "fo_c8": np.asfortranarray(random_array(rng, "c8", (2, 3))),
        "fo_b1": np.asfortranarray(random_array(rng, "b1", (3, 2))),
        "fo_u1": np.asfortranarray(random_array(rng, "u1", (2, 3, 4, 5))),
        "fo_empty": np.asfortranarray(np.zeros((0, 3), dtype="<f4")),
    }
    if not arrays["fo_f8"].flags.f_contiguous or arrays["fo_f8"].flags.c_contiguous:
        fail("fo_f8 is not Fortran-ordered")
    inputs, tensors, names = [], [], []
    for name, a in arrays.items():
        path = os.path.join(out, f"{name}.npy")
        np.save(path, a)
        with open(path, "rb") as f:
            head = f.read(128)
        if name.startswith("be_") and b"'>" not in head:
            fail(f"{name}: not written big-endian")
        if name.startswith("fo_") and name != "fo_empty" and b"'fortran_order': True" not in head:
            fail(f"{name}: not written in Fortran order")
        inputs.append(path)
        tensors.append(describe(name, a, path, f"{name}.npy"))
        names.append(name)
    for version in [(2, 0), (3, 0)]:
        name = f"v{version[0]}"
        a = random_array(rng, "u2", (3, 2))
        path = os.path.join(out, f"{name}.npy")
        with open(path, "wb") as f:
            np.lib.format.write_array(f, a, version=version)
        inputs.append(path)
        tensors.append(describe(name, a, path, f"{name}.npy"))
        arrays[name] = a
        names.append(name)
    expected = os.path.join(out, "expected.ten")
    with open(expected, "wb") as f:
        f.write(encode(list(arrays.values()), names))
    return {"samples": [{"key": "odd", "inputs": inputs, "ten": expected, "tensors": tensors}]}


def gen_bad(out):
    good = np.arange(6, dtype="<i4").reshape(2, 3)
    np.save(os.path.join(out, "good.npy"), good)
    refused = {
        "obj": (np.array([1, "a", None], dtype=object), "|O"),
        "u3": (np.array(["abc", "de"], dtype="<U3"), "<U3"),
        "struct": (np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]), "('a', '<i4')"),
        "bytes": (np.array([b"ab", b"c"], dtype="S2"), "|S2"),
        "date": (np.array(["2020-01-01"], dtype="M8[D]"), "<M8[D]"),
    }
    for name, (a, _) in refused.items():
        np.save(os.path.join(out, f"{name}.npy"), a, allow_pickle=True)
    with open(os.path.join(out, "good.npy"), "rb") as f:
        raw = f.read()
    damaged = {
        "truncdat": raw[:-5],
        "longdat": raw + b"\0" * 4,
        "trunchdr": raw[:40],
        "magic": b"\x93NUMPZ" + raw[6:],
        "empty": b"",
        "notnpy": b"hello, world\n" * 10,
    }
    for name, b in damaged.items():
        with open(os.path.join(out, f"{name}.npy"), "wb") as f:
            f.write(b)
    np.save(os.path.join(out, "toolongname.npy"), good)
    # Tensor names that would be paths if used as file names.
    path_names = ["../a", "a/b", "..", ".", "/x", "sp ace"]
    path_arrays = [np.full((2,), i, dtype="<i2") for i in range(len(path_names))]
    with open(os.path.join(out, "names.ten"), "wb") as f:
        f.write(encode(path_arrays, path_names))
    # Two tensors with one name (tenbin allows it).
    with open(os.path.join(out, "dup.ten"), "wb") as f:
        f.write(encode([np.arange(3, dtype="<u1"), np.arange(4, dtype="<f4")], ["same", "same"]))
    with open(os.path.join(out, "stdin.ten"), "wb") as f:
        f.write(encode([np.arange(12, dtype="<f8").reshape(3, 4), np.array(5, dtype="<i8")], ["feat", "cls"]))
    return {
        "refused": {k: d for k, (_, d) in refused.items()},
        "damaged": sorted(damaged),
        "path_names": path_names,
    }


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1700000000
    tar.addfile(info, io.BytesIO(data))


def npy_bytes(a):
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def gen_import(out):
    rng = np.random.default_rng(99)
    expected = {}  # key -> [(name, array)], in order
    skipped = 0

    def ref(key, name, a):
        expected.setdefault(key, []).append((name, a))

    # A directory: key = file name up to the first dot.
    d = os.path.join(out, "dir")
    os.makedirs(os.path.join(d, "sub"))
    image, label = random_array(rng, "u1", (3, 4, 4)), np.array([3], dtype="<i8")
    np.save(os.path.join(d, "s1.image.npy"), image)
    np.save(os.path.join(d, "s1.label.npy"), label)
    ref("s1", "image", image)
    ref("s1", "label", label)
    a, b = random_array(rng, "f4", (2, 5)), random_array(rng, "c8", (3,))
    with open(os.path.join(d, "s2.ten"), "wb") as f:
        f.write(tenbin.encode_buffer([a], infos=["emb"]) + encode([b], ["z"]))
    ref("s2", "emb", a)
    ref("s2", "z", b)
    # Sorted: s3.extra.npy before s3.ten.
    e, t = random_array(rng, "b1", (4,)), random_array(rng, "i2", ())
    np.save(os.path.join(d, "s3.extra.npy"), e)
    with open(os.path.join(d, "s3.ten"), "wb") as f:
        f.write(encode([t], ["t"]))
    ref("s3", "extra", e)
    ref("s3", "t", t)
    # A bare .npy: one unnamed tensor. In a subdirectory: the key is the name.
    u = random_array(rng, "f8", (2, 2))
    np.save(os.path.join(d, "sub", "s4.npy"), u)
    ref("s4", "", u)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("not a tensor\n")
    skipped += 1

    # webdataset shards, as Python's tarfile writes them.
    def shard(path, mode, keys):
        nonlocal skipped
        with tarfile.open(path, mode) as tar:
            for i, key in enumerate(keys):
                img = random_array(rng, "u1", (2, 3, 3))
                lab = np.array([i], dtype="<i8")
                add(tar, f"{key}.image.npy", npy_bytes(img))
                add(tar, f"{key}.label.npy", npy_bytes(lab))
                ref(key, "image", img)
                ref(key, "label", lab)
                if i % 2 == 0:
                    w = random_array(rng, "f2", (4,))
                    add(tar, f"{key}.ten", encode([w], ["w"]))
                    ref(key, "w", w)
                add(tar, f"{key}.cls", str(i).encode())
                skipped += 1

    shard(os.path.join(out, "shard-000.tar"), "w", [f"train/k{i:03d}" for i in range(4)])
    shard(os.path.join(out, "shard-001.tar.gz"), "w:gz", [f"k{i:03d}" for i in range(4, 9)])

    # Bad inputs for the all-or-nothing test.
    bad = os.path.join(out, "bad")
    os.makedirs(bad)
    with tarfile.open(os.path.join(bad, "badmember.tar"), "w") as tar:
        add(tar, "b000.image.npy", npy_bytes(np.zeros(3, dtype="u1")))
        add(tar, "b001.image.npy", b"\x93NUMPY garbage")
        add(tar, "b002.image.npy", npy_bytes(np.zeros(3, dtype="u1")))
    with open(os.path.join(out, "shard-000.tar"), "rb") as f:
        raw = f.read()
    with open(os.path.join(bad, "truncated.tar"), "wb") as f:
        f.write(raw[: 512 + 100])  # the first member's header and part of its data
    with open(os.path.join(bad, "notgz.tar.gz"), "wb") as f:
        f.write(raw)
    np.save(os.path.join(bad, "b9.toolongname.npy"), np.zeros(2, dtype="u1"))
    with open(os.path.join(bad, "b8.ten"), "wb") as f:
        f.write(b"~TenBin~" + b"\xff" * 8)

    arrays_dir = os.path.join(out, "expected")
    os.makedirs(arrays_dir)
    samples = []
    for n, (key, items) in enumerate(sorted(expected.items())):
        tensors = []
        for i, (name, a) in enumerate(items):
            path = os.path.join(arrays_dir, f"{n}_{i}.npy")
            np.save(path, a)
            tensors.append(describe(name, a, path, f"{name or i}.npy"))
        samples.append({"key": key, "tensors": tensors})
    return {"samples": samples, "skipped": skipped}


def gen(kind, out):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    manifest = {"dtypes": gen_dtypes, "odd": gen_odd, "bad": gen_bad, "import": gen_import}[kind](out)
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    print(f"generated {kind}")


# --- checking outputs -------------------------------------------------------


def escape(key):
    """export's file name rule: bytes other than letters, digits, - _ and
    inner . as %XX."""
    out = []
    for i, b in enumerate(key.encode("utf-8")):
        c = chr(b)
        if (c.isascii() and c.isalnum()) or c in "-_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.append(f"%{b:02X}")
    return "".join(out) or "%"


def check_npy(manifest, root):
    count = 0
    for s in json.load(open(manifest, encoding="utf-8"))["samples"]:
        d = os.path.join(root, s["key"])
        want = sorted(t["file"] for t in s["tensors"])
        got = sorted(os.listdir(d))
        if got != want:
            fail(f"{s['key']}: files {got}, expected {want}")
        for t in s["tensors"]:
            path = os.path.join(d, t["file"])
            if not os.path.isfile(path) or os.path.islink(path):
                fail(f"{path}: not a plain file")
            got = np.load(path, allow_pickle=False)
            same(f"{s['key']}/{t['file']}", got, np.load(t["npy"]))
            if not got.flags.c_contiguous:
                fail(f"{path}: not C order")
            count += 1
    print(f"ok {count} arrays")


def check_export(manifest, d):
    samples = json.load(open(manifest, encoding="utf-8"))["samples"]
    want = sorted(escape(s["key"]) + ".ten" for s in samples)
    got = sorted(os.listdir(d))
    if got != want:
        fail(f"export wrote {got}, expected {want}")
    for s in samples:
        with open(os.path.join(d, escape(s["key"]) + ".ten"), "rb") as f:
            names, arrays = decode(f.read())
        want_names = [t["name"] for t in s["tensors"]]
        if names != want_names:
            fail(f"{s['key']}: tensors {names}, expected {want_names}")
        for t, a in zip(s["tensors"], arrays):
            same(f"{s['key']}/{t['name']}", a, np.load(t["npy"]))
    print(f"ok {len(samples)} samples")


def corrupt(store, good):
    import lmdb

    env = lmdb.open(store, map_size=1 << 30, subdir=True)
    with env.begin(write=True) as txn:
        value = txn.get(good.encode())
        if value is None:
            fail(f"no key {good!r} in {store}")
        txn.put(b"bad", b"this is not a tenbin buffer")
        txn.put(b"trunc", value[:-8])
    env.close()
    print("corrupted")


def main():
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(sys.argv[2], sys.argv[3])
    elif cmd == "check-npy":
        check_npy(sys.argv[2], sys.argv[3])
    elif cmd == "check-export":
        check_export(sys.argv[2], sys.argv[3])
    elif cmd == "corrupt":
        corrupt(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
