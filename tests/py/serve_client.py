"""A pyzmq client of `tenstore serve`, checking every command against the
demo samples (see demo_values.py).

usage: serve_client.py ENDPOINT N BACKEND

The store behind ENDPOINT holds samples 0..N-1 of `tenstore demo` (N >= 200)
in a BACKEND ("lmdb" or "ten") store. Checks, with REQ, DEALER with the
empty delimiter frame and DEALER without it:

- len, info (backend, sample count);
- keys paged with LIMIT 7 over every key, and with a PREFIX;
- get of 1 and of 64 keys, getm; every value decoded with
  tenbin.decode_buffer / decode_list and compared element by element;
- missing keys and malformed requests answer "err" with a message.

Prints "ok OK_REPLIES ERR_REPLIES" (what the server should have counted).
"""

import json
import random
import sys

import zmq

from demo_values import check, index_of, key
from tenbin_util import tenbin

TIMEOUT_MS = 10_000


class Counter:
    ok = 0
    err = 0


def ask(sock, frames, dealer_delim=None):
    """Sends a request, returns the reply frames after the envelope."""
    if dealer_delim is True:
        sock.send_multipart([b""] + frames)
    else:
        sock.send_multipart(frames)
    reply = sock.recv_multipart()
    if dealer_delim is True:
        if not (reply[0] == b""):
            raise AssertionError(f"DEALER reply without the delimiter: {reply[:2]}")
        reply = reply[1:]
    if not (reply[0] in (b"ok", b"err")):
        raise AssertionError(f"status {reply[0]!r} for {frames[:2]}")
    if reply[0] == b"ok":
        Counter.ok += 1
    else:
        Counter.err += 1
    return reply


def ok(sock, frames, dealer_delim=None):
    reply = ask(sock, frames, dealer_delim)
    if not (reply[0] == b"ok"):
        raise AssertionError(f"request {frames[:3]} failed: {reply[1:2]}")
    return reply[1:]


def err(sock, frames, needle, dealer_delim=None):
    reply = ask(sock, frames, dealer_delim)
    if not (reply[0] == b"err"):
        raise AssertionError(f"request {[f[:20] for f in frames[:3]]} did not fail: {reply[:1]}")
    if not (len(reply) == 2):
        raise AssertionError(f"err reply of {len(reply)} frames")
    msg = reply[1].decode()
    if not (needle in msg):
        raise AssertionError(f"err message {msg!r} lacks {needle!r}")
    return msg


def check_buffer(where, i, buf):
    arrays, names = tenbin.decode_buffer(buf, infos=True)
    check(where, i, arrays, names)


def commands(sock, n, backend, delim=None):
    rng = random.Random(n)
    # len and info
    if not (ok(sock, [b"len"], delim) == [str(n).encode()]):
        raise AssertionError('failed: ok(sock, [b"len"], delim) == [str(n).encode()]')
    info = json.loads(ok(sock, [b"info"], delim)[0])
    if not (info["backend"] == backend):
        raise AssertionError(info)
    if not (info["samples"] == n):
        raise AssertionError(info)
    if not (info["bytes"] > 0):
        raise AssertionError(info)

    # keys, paged
    every, after = [], b""
    while True:
        page = ok(sock, [b"keys", b"", after, b"7"], delim)
        if not (len(page) <= 7):
            raise AssertionError('failed: len(page) <= 7')
        every += page
        if len(page) < 7:
            break
        after = page[-1]
    if not (every == [key(i) for i in range(n)]):
        raise AssertionError("paging gave other keys")
    prefixed, after = [], b""
    while True:
        page = ok(sock, [b"keys", b"sample-000001", after, b"30"], delim)
        prefixed += page
        if len(page) < 30:
            break
        after = page[-1]
    if not (prefixed == [key(i) for i in range(100, 200)]):
        raise AssertionError(prefixed[:3])
    if not (ok(sock, [b"keys", b"sample-", key(n - 1)], delim) == []):
        raise AssertionError('failed: ok(sock, [b"keys", b"sample-", key(n - 1)], delim) == []')
    if not (ok(sock, [b"keys", b"sample-", b"", b"0"], delim) == []):
        raise AssertionError('failed: ok(sock, [b"keys", b"sample-", b"", b"0"], delim) == []')
    if not (ok(sock, [b"keys"], delim) == [key(i) for i in range(n)]):
        raise AssertionError('failed: ok(sock, [b"keys"], delim) == [key(i) for i in range(n)]')

    # get: 1 key, 64 keys; getm
    i = rng.randrange(n)
    (buf,) = ok(sock, [b"get", key(i)], delim)
    check_buffer(f"get {i}", i, buf)
    many = [rng.randrange(n) for _ in range(60)] + [0, n - 1, 0, 5]
    bufs = ok(sock, [b"get"] + [key(j) for j in many], delim)
    if not (len(bufs) == 64):
        raise AssertionError('failed: len(bufs) == 64')
    for j, b in zip(many, bufs):
        check_buffer(f"get of 64, sample {j}", j, b)
    i = rng.randrange(n)
    frames = ok(sock, [b"getm", key(i)], delim)
    if not (len(frames) == 6):
        raise AssertionError(f"getm gave {len(frames)} frames")
    arrays, names = tenbin.decode_list(frames, infos=True)
    check(f"getm {i}", i, arrays, names)
    if not (index_of(arrays) == i):
        raise AssertionError('failed: index_of(arrays) == i')

    # missing keys and malformed requests
    err(sock, [b"get", b"no-such-key"], "no sample with key", delim)
    err(sock, [b"get", key(0), b"sample-99999999"], "no sample with key", delim)
    err(sock, [b"getm", b"no-such-key"], "no sample with key", delim)
    err(sock, [b"get"], "at least one key", delim)
    err(sock, [b"getm", key(0), key(1)], "exactly one key", delim)
    err(sock, [b"len", b"x"], "no arguments", delim)
    err(sock, [b"info", b"x"], "no arguments", delim)
    err(sock, [b"keys", b"", b"", b"ten"], "LIMIT", delim)
    err(sock, [b"keys", b"", b"", b"1", b"extra"], "at most", delim)
    err(sock, [b"get", b"k" * 512], "1 to 511 bytes", delim)
    err(sock, [b"get", b""], "1 to 511 bytes", delim)
    err(sock, [b"frobnicate"], "unknown command", delim)
    err(sock, [b"GET", key(0)], "unknown command", delim)
    err(sock, [b"get"] + [key(0)] * 1025, "at most 1025", delim)
    # The server still answers after all that.
    if not (ok(sock, [b"len"], delim) == [str(n).encode()]):
        raise AssertionError('failed: ok(sock, [b"len"], delim) == [str(n).encode()]')


def pipelined(sock, n):
    """A DEALER sends many gets before reading: replies may come back in
    any order (several workers), each is whole and right."""
    want = list(range(0, n, 7))
    for i in want:
        sock.send_multipart([b"get", key(i)])
    got = []
    for _ in want:
        reply = sock.recv_multipart()
        if not (reply[0] == b"ok" and len(reply) == 2):
            raise AssertionError(reply[:1])
        Counter.ok += 1
        arrays, names = tenbin.decode_buffer(reply[1], infos=True)
        i = index_of(arrays)
        check(f"pipelined {i}", i, arrays, names)
        got.append(i)
    if not (sorted(got) == want):
        raise AssertionError('failed: sorted(got) == want')


def main():
    endpoint, n, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = zmq.Context()

    def socket(kind):
        s = ctx.socket(kind)
        s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        s.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        return s

    try:
        commands(socket(zmq.REQ), n, backend)
        commands(socket(zmq.DEALER), n, backend, delim=True)
        commands(socket(zmq.DEALER), n, backend, delim=False)
        pipelined(socket(zmq.DEALER), n)
    except zmq.Again:
        print("timed out waiting for the server", file=sys.stderr)
        sys.exit(1)
    ctx.destroy(linger=0)
    print(f"ok {Counter.ok} {Counter.err}")


if __name__ == "__main__":
    main()
