"""tenstore writes an LMDB store, Python reads it with py-lmdb.

usage: store_read.py STORE EXPECTED.json LOCK

Opens STORE with `lmdb.open(STORE, readonly=True, lock=LOCK)` (LOCK is 0 or
1), walks the main database with a cursor and checks, against EXPECTED.json
({"samples": [{"key": HEX, "arrays": [entry, ...]}, ...]}, see
tenbin_util.py for the entries):

- the keys are exactly the expected sample keys, in LMDB (byte) order: no
  metadata key, no named sub-database, nothing else;
- each value decodes with `tenbin.decode_buffer(value, infos=True)` to the
  expected names and arrays, every element bit for bit;
- each value is byte for byte what `tenbin.encode_buffer` makes of them.

Prints "ok SAMPLES TENSORS" and a line of the environment's page counts
("stat psize=.. depth=.. branch=.. leaf=.. overflow=.. entries=.."), and
"sizes small=N large=M" (values under 2 KB and over 4 KB). Exits 1 with a
message on any mismatch.
"""

import os
import sys

import lmdb

from tenbin_util import Mismatch, compare, fail, load_manifest, tenbin


def main():
    store, manifest, lock = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    samples = load_manifest(manifest)["samples"]
    want = {bytes.fromhex(s["key"]): s["arrays"] for s in samples}
    if len(want) != len(samples):
        fail("the manifest repeats a key")
    if not os.path.isfile(os.path.join(store, "tenstore.json")):
        fail("the store has no tenstore.json")

    env = lmdb.open(store, readonly=True, lock=lock, subdir=True)
    keys = []
    tensors = small = large = 0
    try:
        with env.begin() as txn:
            stat = txn.stat()
            for key, value in txn.cursor():
                keys.append(key)
                if key not in want:
                    raise Mismatch(f"unexpected key {key!r} ({len(value)} value bytes)")
                entries = want[key]
                arrays, names = tenbin.decode_buffer(value, infos=True)
                if len(arrays) != len(entries) or len(names) != len(entries):
                    raise Mismatch(
                        f"key {key!r}: {len(arrays)} arrays, {len(names)} names, expected {len(entries)}"
                    )
                for i, (a, name, entry) in enumerate(zip(arrays, names, entries)):
                    compare(f"key {key!r} array {i}", a, name, entry)
                again = tenbin.encode_buffer(arrays, infos=names)
                if bytes(again) != bytes(value):
                    raise Mismatch(f"key {key!r}: stored bytes differ from encode_buffer's")
                tensors += len(arrays)
                if len(value) < 2000:
                    small += 1
                elif len(value) > 4096:
                    large += 1
    except Mismatch as e:
        fail(str(e))
    finally:
        env.close()

    if keys != sorted(want):
        missing = sorted(set(want) - set(keys))[:5]
        fail(f"{len(keys)} keys, expected {len(want)}; missing e.g. {missing!r}; order ok: {keys == sorted(keys)}")
    if stat["entries"] != len(want):
        fail(f"stat says {stat['entries']} entries, expected {len(want)}")
    print(f"ok {len(keys)} {tensors}")
    print(
        "stat psize={psize} depth={depth} branch={branch_pages} leaf={leaf_pages} "
        "overflow={overflow_pages} entries={entries}".format(**stat)
    )
    print(f"sizes small={small} large={large}")


if __name__ == "__main__":
    main()
