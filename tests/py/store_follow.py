"""A Python reader process following a store that tenstore is writing.

usage: store_follow.py STORE follow STOPFILE LOCK MAP_SIZE
       store_follow.py STORE step - LOCK MAP_SIZE

Opens STORE with `lmdb.open(STORE, readonly=True, lock=LOCK,
map_size=MAP_SIZE)` (LOCK 0 or 1; a MAP_SIZE smaller than the data is raised
by LMDB to the data's size at open) and takes read snapshots:

- follow: one after another, while the writer writes, until STOPFILE
  exists, and one last snapshot after that;
- step: one per "snap" line on stdin, answering each with
  "snap n=N resizes=R mapsize=M", until "quit" (the writer writes only
  between snapshots, so no snapshot of this process is open during a
  commit: what a lock-free reader needs to be safe).

In each snapshot it decodes every sample with `tenbin.decode_buffer` and
checks it against the values its key determines (see `expected`): the writer
puts keys w000000, w000001, ... in order, in batches, so a snapshot must hold
exactly w000000 .. w{n-1}, every sample whole.

When the writer has grown the map past this process's map, starting a
snapshot raises `lmdb.MapResizedError`; the reader then adopts the new size
with `env.set_mapsize(0)` (no transaction of its own open) and tries again.

Prints "FOLLOWER-READY" after its first snapshot, in follow mode
"seen n=N" after each later snapshot that saw more samples, and at the end
"verified samples=S snapshots=N resizes=R final=F mapsize=M" (S: samples
checked over all snapshots; F: samples in the last snapshot). Exits 1 with a
message on any mismatch.
"""

import os
import sys
import time

import lmdb
import numpy as np

from tenbin_util import fail, tenbin

NAMES = ["idx", "u2", "f8", "i1"]


def expected(i):
    """The arrays of sample i; tests/store_interop.rs `follow_sample` makes
    the same."""
    n = 6000 if i % 2 == 0 else 20 + i % 97
    k = 1 + i % 50
    return [
        np.array([i], dtype="<i8"),
        ((i * 7 + np.arange(n, dtype=np.int64) * 13) % 65536).astype("<u2"),
        (i + np.arange(6, dtype=np.float64) / 8).reshape(2, 3),
        (((i + np.arange(k, dtype=np.int64)) % 256) - 128).astype("i1"),
    ]


def check(key, value):
    if not (len(key) == 7 and key.startswith(b"w") and key[1:].isdigit()):
        fail(f"unexpected key {key!r}")
    i = int(key[1:])
    try:
        arrays, names = tenbin.decode_buffer(value, infos=True)
    except Exception as e:  # noqa: BLE001 -- any decoding fault is a mismatch
        fail(f"{key!r}: decode_buffer failed on {len(value)} bytes: {e!r}")
    if names != NAMES:
        fail(f"{key!r}: names {names!r}, expected {NAMES!r}")
    for name, got, want in zip(names, arrays, expected(i)):
        if got.dtype != want.dtype or got.shape != want.shape:
            fail(f"{key!r} {name}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}")
        if got.tobytes() != want.tobytes():
            bad = np.nonzero(got.reshape(-1) != want.reshape(-1))[0]
            fail(f"{key!r} {name}: {bad.size} elements differ, first at {int(bad[0]) if bad.size else '?'}")
    return i


def snapshot(env, number):
    """One snapshot: returns (samples in it, map resizes it took)."""
    resizes = 0
    while True:
        try:
            txn = env.begin()
            break
        except lmdb.MapResizedError:
            # The data outgrew this process's map: adopt the size the writer
            # set. No transaction of this process may be open here.
            env.set_mapsize(0)
            resizes += 1
            if resizes > 100:
                fail(f"snapshot {number}: MapResizedError after 100 set_mapsize(0)")
    with txn:
        entries = txn.stat()["entries"]
        n = 0
        for key, value in txn.cursor():
            i = check(key, value)
            if i != n:
                fail(f"snapshot {number}: key {key!r} at position {n}: samples are missing")
            n += 1
    if n != entries:
        fail(f"snapshot {number}: {n} samples listed, stat says {entries}")
    return n, resizes


def main():
    store, mode, stopfile = sys.argv[1], sys.argv[2], sys.argv[3]
    lock, map_size = sys.argv[4] == "1", int(sys.argv[5])
    if mode not in ("follow", "step"):
        fail(f"unknown mode {mode!r}")
    env = lmdb.open(store, readonly=True, lock=lock, map_size=map_size, subdir=True)
    samples = snapshots = resizes = 0
    last = -1
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline:
            fail("never told to stop")
        if mode == "follow":
            stopping = os.path.exists(stopfile)
        elif snapshots == 0:
            stopping = False
        else:
            command = sys.stdin.readline().strip()
            if command == "quit":
                break
            if command != "snap":
                fail(f"unknown command {command!r}")
            stopping = False
        n, r = snapshot(env, snapshots)
        if n < last:
            fail(f"snapshot {snapshots}: {n} samples after {last} before")
        previous, last = last, n
        samples += n
        resizes += r
        snapshots += 1
        if snapshots == 1:
            print("FOLLOWER-READY", flush=True)
        elif mode == "follow" and n != previous:
            print(f"seen n={n}", flush=True)
        elif mode == "step":
            print(f"snap n={n} resizes={resizes} mapsize={env.info()['map_size']}", flush=True)
        if stopping:
            break
    print(
        f"verified samples={samples} snapshots={snapshots} resizes={resizes} "
        f"final={last} mapsize={env.info()['map_size']}",
        flush=True,
    )
    env.close()


if __name__ == "__main__":
    main()
