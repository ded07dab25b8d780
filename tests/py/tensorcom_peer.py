"""The Python end of tests/tensorcom.rs: tensorcom 0.1.0 itself (from PyPI),
used as its users use it, on the other side of `tenstore push` / `pull`.

usage:
  tensorcom_peer.py recv URL COUNT [single]
      Connection(URL, multipart=...) receives COUNT messages. A binding URL
      (zpull://HOST:*, zrsub://) first prints "ready ENDPOINT". Each message
      is printed as one JSON line: {"batch": Connection.batchsize(msg),
      "arrays": [[numpy dtype name, shape, data as hex], ...]}.
  tensorcom_peer.py send URL COUNT [single]
      Connection(URL, multipart=...) sends COUNT messages; message m holds
      the arrays of spec(m) under the names "img", "f", "h", "lab", "key"
      (the key: the bytes of "m%03d" as u1). Prints each message's arrays
      as JSON lines {"key": ..., "arrays": [[name, dtype code, shape,
      sha256 of the data], ...]} (what `tenstore get --json` shows).
  tensorcom_peer.py compat
      For every tenbin dtype code, 1-d and 0-d, whether tensorcom's and
      webdataset 1.0.2's decoders (unpatched) decode it: prints the
      failing (code, ndim) pairs as JSON.

Every wait is bounded (20 s): a stuck peer fails the test, never hangs it.
"""

import hashlib
import json
import struct
import sys

import numpy as np
import zmq

import tensorcom
import tensorcom.tenbin as tc_tenbin

TIMEOUT_MS = 20_000


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def spec(m):
    """The arrays of sender message m (tensorcom's reference dtypes, no
    64-bit floats, every rank >= 1)."""
    return [
        ("img", ((np.arange(24, dtype=np.int64) * 7 + m) % 256).astype(np.uint8).reshape(2, 3, 4)),
        ("f", (np.arange(5, dtype=np.float32) * 0.5 + m).astype(np.float32)),
        ("h", (np.arange(4, dtype=np.float16) - m).astype(np.float16).reshape(2, 2)),
        ("lab", np.array([m, -m], dtype=np.int64)),
        ("key", np.frombuffer(b"m%03d" % m, dtype=np.uint8).copy()),
    ]


def recv(url, count, multipart):
    c = tensorcom.Connection(url, multipart=multipart)
    c.socket.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    if c.socket.getsockopt(zmq.TYPE) in (zmq.PULL, zmq.SUB) and url.split(":")[0] in ("zpull", "zrsub"):
        print("ready", c.socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    for _ in range(count):
        try:
            msg = c.recv()
        except zmq.Again:
            fail("timed out waiting for a message")
        arrays = [[a.dtype.name, list(a.shape), a.tobytes().hex()] for a in msg]
        print(json.dumps({"batch": c.batchsize(msg), "arrays": arrays}), flush=True)
    c.close()


def send(url, count, multipart):
    names = [n for n, _ in spec(0)]
    c = tensorcom.Connection(url, multipart=multipart, infos=names)
    for m in range(count):
        arrays = spec(m)
        c.send([a for _, a in arrays], allow64=True)
        desc = [
            [n, tc_tenbin.long_to_short[a.dtype.name], list(a.shape), hashlib.sha256(a.tobytes()).hexdigest()]
            for n, a in arrays
        ]
        print(json.dumps({"key": "m%03d" % m, "arrays": desc}), flush=True)
    # Connection sets LINGER 0; wait for the queued messages to leave.
    c.socket.setsockopt(zmq.LINGER, TIMEOUT_MS)
    c.socket.close()


def word(code):
    return struct.unpack("<q", (code.encode() + b"\0" * 8)[:8])[0]


def compat():
    # Imported here only: webdataset's package imports torch when it is
    # installed, which the other modes do not need.
    from webdataset import tenbin as wds_tenbin

    sizes = dict(f2=2, f4=4, f8=8, i1=1, i2=2, i4=4, i8=8, u1=1, u2=2, u4=4, u8=8,
                 b1=1, bf16=2, c8=8, c16=16)
    failing = []
    for code, size in sizes.items():
        for shape in [(3,), ()]:
            n = int(np.prod(shape, dtype=np.int64))
            header = np.array([word(code), 0, len(shape)] + list(shape), dtype="<i8").tobytes()
            frames = [header, bytes(size * n)]
            for lib in (tc_tenbin, wds_tenbin):
                try:
                    lib.decode_list(frames)
                except Exception:
                    failing.append([code, len(shape)])
                    break
    print(json.dumps(failing))


def main():
    mode = sys.argv[1]
    if mode == "compat":
        return compat()
    url, count = sys.argv[2], int(sys.argv[3])
    multipart = not (len(sys.argv) > 4 and sys.argv[4] == "single")
    if mode == "recv":
        recv(url, count, multipart)
    elif mode == "send":
        send(url, count, multipart)
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
