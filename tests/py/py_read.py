"""Rust writes, Python reads.

usage: py_read.py DIR

Reads what the Rust test wrote into DIR with the reference, in every form,
and compares each array with DIR/expected.json element by element:

    DIR/rust.ten          tenbin.load
    DIR/buffer.bin        tenbin.decode_buffer
    DIR/stream.bin        tenbin.read on an open file
    DIR/frames/partNNN.bin tenbin.decode_list

Prints "ok FORM COUNT" per form; exits 1 with a message on any mismatch.
"""

import os
import sys

from tenbin_util import Mismatch, compare, fail, load_manifest, tenbin


def check(form, arrays, names, entries):
    if len(arrays) != len(entries) or len(names) != len(entries):
        raise Mismatch(f"{form}: {len(arrays)} arrays and {len(names)} names, expected {len(entries)}")
    for i, (a, name, entry) in enumerate(zip(arrays, names, entries)):
        compare(f"{form}: array {i}", a, name, entry)
    print(f"ok {form} {len(arrays)}")


def main():
    d = sys.argv[1]
    entries = load_manifest(os.path.join(d, "expected.json"))["arrays"]
    try:
        arrays, names = tenbin.load(os.path.join(d, "rust.ten"), infos=True)
        check("load", arrays, names, entries)

        with open(os.path.join(d, "buffer.bin"), "rb") as f:
            buf = f.read()
        arrays, names = tenbin.decode_buffer(buf, infos=True)
        check("decode_buffer", arrays, names, entries)

        with open(os.path.join(d, "stream.bin"), "rb") as f:
            arrays, names = tenbin.read(f, infos=True)
            if f.read(1) != b"":
                raise Mismatch("read: bytes left after the last array")
        check("read", arrays, names, entries)

        frames_dir = os.path.join(d, "frames")
        parts = sorted(os.listdir(frames_dir))
        if len(parts) != 2 * len(entries):
            raise Mismatch(f"decode_list: {len(parts)} frames, expected {2 * len(entries)}")
        frames = []
        for p in parts:
            with open(os.path.join(frames_dir, p), "rb") as f:
                frames.append(f.read())
        arrays, names = tenbin.decode_list(frames, infos=True)
        check("decode_list", arrays, names, entries)
    except Mismatch as e:
        fail(str(e))


if __name__ == "__main__":
    main()
