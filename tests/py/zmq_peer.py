"""The Python end of tests/net_zmq.rs: pyzmq with the reference
webdataset.tenbin, on the other side of tenstore's zsend/zrecv.

usage: zmq_peer.py send|recv ENDPOINT single|multipart SEED COUNT

send: connects a PUSH socket to ENDPOINT and sends COUNT messages; message m
      holds the arrays of spec(SEED + m), encoded with tenbin.encode_buffer
      (one frame) or tenbin.encode_list (header and data frames).
recv: connects a PULL socket to ENDPOINT, receives COUNT messages, decodes
      them with tenbin.decode_buffer / tenbin.decode_list and checks names,
      dtypes, shapes and every element bit for bit against spec(SEED + m).

Prints "ok COUNT TENSORS BYTES" (BYTES: data bytes of all tensors). Exits 1
with a message on any mismatch; every wait is bounded (20 s).

The arrays (the same table and generator are in tests/net_zmq.rs): message
seed s, array k, element i has the bits of splitmix64((s << 32) ^ (k << 24)
+ i), cut to the element size (floats included: any bit pattern, NaNs too).
Message 0 also carries a 4 MiB float32 array.
"""

import sys

import numpy as np
import zmq

from tenbin_util import UINT_OF_SIZE, fail, tenbin

MASK = (1 << 64) - 1
TIMEOUT_MS = 20_000

# (code, shape); the names are "t0", "t1", ... in this order.
TABLE = [
    ("f2", [3, 5]),
    ("f4", [17]),
    ("f8", [2, 3]),
    ("i1", [4, 4, 4]),
    ("i2", [31]),
    ("i4", [2, 2, 2, 2]),
    ("i8", [5]),
    ("u1", [3, 64, 64]),
    ("u2", [8]),
    ("u4", [6]),
    ("u8", [2, 7]),
    ("f4", [0]),
]
BIG = ("f4", [1024, 1024])


def spec(seed):
    """The (name, code, shape) of message `seed`'s arrays."""
    table = TABLE + ([BIG] if seed % 1000 == 0 else [])
    return [(f"t{k}", code, shape) for k, (code, shape) in enumerate(table)]


def splitmix(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def array(seed, k, code, shape):
    dtype = np.dtype(tenbin.short_to_long[code]).newbyteorder("<")
    n = int(np.prod(shape, dtype=np.int64))
    base = np.uint64(((seed << 32) ^ (k << 24)) & MASK)
    with np.errstate(over="ignore"):
        bits = splitmix(np.arange(n, dtype=np.uint64) + base)
    return bits.astype(UINT_OF_SIZE[dtype.itemsize]).view(dtype).reshape(shape)


def expected(seed):
    return [(name, array(seed, k, code, shape)) for k, (name, code, shape) in enumerate(spec(seed))]


def check(m, arrays, names, want):
    if len(arrays) != len(want) or len(names) != len(want):
        fail(f"message {m}: {len(arrays)} arrays, {len(names)} names, expected {len(want)}")
    for k, (got, name, (wname, w)) in enumerate(zip(arrays, names, want)):
        where = f"message {m} array {k}"
        if name != wname:
            fail(f"{where}: name {name!r}, expected {wname!r}")
        if got.dtype != w.dtype:
            fail(f"{where}: dtype {got.dtype}, expected {w.dtype}")
        if tuple(got.shape) != tuple(w.shape):
            fail(f"{where}: shape {got.shape}, expected {w.shape}")
        uint = UINT_OF_SIZE[w.dtype.itemsize]
        g = np.ascontiguousarray(got).reshape(-1).view(uint)
        e = w.reshape(-1).view(uint)
        bad = np.nonzero(g != e)[0]
        if bad.size:
            i = int(bad[0])
            fail(f"{where}: {bad.size} of {e.size} elements differ, first at {i}: {g[i]:#x} != {e[i]:#x}")


def main():
    mode, endpoint, framing, seed, count = sys.argv[1:6]
    seed, count = int(seed), int(count)
    if framing not in ("single", "multipart"):
        fail(f"unknown framing {framing!r}")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH if mode == "send" else zmq.PULL)
    sock.setsockopt(zmq.LINGER, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.connect(endpoint)
    tensors = nbytes = 0
    try:
        for m in range(count):
            want = expected(seed + m)
            tensors += len(want)
            nbytes += sum(a.nbytes for _, a in want)
            if mode == "send":
                arrays = [a for _, a in want]
                names = [n for n, _ in want]
                if framing == "single":
                    sock.send(tenbin.encode_buffer(arrays, infos=names))
                else:
                    sock.send_multipart(tenbin.encode_list(arrays, infos=names))
            elif mode == "recv":
                frames = sock.recv_multipart()
                if framing == "single":
                    if len(frames) != 1:
                        fail(f"message {m}: {len(frames)} frames, expected one")
                    arrays, names = tenbin.decode_buffer(frames[0], infos=True)
                else:
                    if len(frames) != 2 * len(want):
                        fail(f"message {m}: {len(frames)} frames, expected {2 * len(want)}")
                    arrays, names = tenbin.decode_list(frames, infos=True)
                check(m, arrays, names, want)
            else:
                fail(f"unknown mode {mode!r}")
    except zmq.Again:
        fail(f"timed out after {TIMEOUT_MS} ms ({mode} {framing}, message {m})")
    sock.close()
    ctx.term()
    print(f"ok {count} {tensors} {nbytes}")


if __name__ == "__main__":
    main()
