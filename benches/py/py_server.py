#!/usr/bin/env python3
"""The Python peer of `tenstore serve` for benches/net.rs: what a user would
write to serve an LMDB store of tenbin samples over ZeroMQ. A ROUTER socket
and py-lmdb, one thread, the same protocol for `get`:

    get KEY [KEY ...]  ->  ok V [V ...]   (each V the stored tenbin bytes)
    anything else      ->  err MESSAGE

    .venv/bin/python benches/py/py_server.py STORE [--bind tcp://127.0.0.1:*]

Prints `listening on ENDPOINT` on its first line; runs until killed.
"""

import argparse
import signal
import sys

import lmdb
import zmq


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--bind", default="tcp://127.0.0.1:*")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    env = lmdb.open(args.store, readonly=True, subdir=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(args.bind)
    print("listening on", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)

    while True:
        frames = sock.recv_multipart()
        # REQ clients: identity, empty delimiter, then the request.
        split = 2 if len(frames) > 1 and frames[1] == b"" else 1
        envelope, request = frames[:split], frames[split:]
        if request and request[0] == b"get" and len(request) > 1:
            with env.begin() as txn:
                values = [txn.get(k) for k in request[1:]]
            if all(v is not None for v in values):
                sock.send_multipart(envelope + [b"ok"] + values)
                continue
            reply = [b"err", b"no such key"]
        else:
            reply = [b"err", b"unknown command"]
        sock.send_multipart(envelope + reply)


if __name__ == "__main__":
    main()
