"""Python encodes arrays that Rust generated, for byte-for-byte comparison.

usage: py_encode.py DIR

Builds the arrays DIR/expected.json describes and writes the reference's
encodings of them:

    DIR/py_buffer.bin          tenbin.encode_buffer
    DIR/py.ten                 tenbin.save
    DIR/py_frames/partNNN.bin  tenbin.encode_list

Prints "encoded COUNT".
"""

import os
import sys

from tenbin_util import Mismatch, fail, from_entry, load_manifest, tenbin


def main():
    d = sys.argv[1]
    entries = load_manifest(os.path.join(d, "expected.json"))["arrays"]
    try:
        arrays = [from_entry(e) for e in entries]
    except Mismatch as e:
        fail(str(e))
    names = [e["name"] for e in entries]

    with open(os.path.join(d, "py_buffer.bin"), "wb") as f:
        f.write(tenbin.encode_buffer(arrays, infos=names))
    tenbin.save(os.path.join(d, "py.ten"), *arrays, infos=names)
    frames_dir = os.path.join(d, "py_frames")
    os.mkdir(frames_dir)
    for i, frame in enumerate(tenbin.encode_list(arrays, infos=names)):
        with open(os.path.join(frames_dir, f"part{i:03d}.bin"), "wb") as f:
            f.write(frame)
    print(f"encoded {len(arrays)}")


if __name__ == "__main__":
    main()
