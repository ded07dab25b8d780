"""Pulls what `tenstore push` streams and checks it against the demo
samples (see demo_values.py).

usage: push_check.py ENDPOINT N EPOCHS

Connects a PULL socket to ENDPOINT and receives N * EPOCHS messages, each a
sample's header and data frames, decoded with tenbin.decode_list; checks
every element of each and that each epoch (N messages in a row) holds
every sample exactly once. Prints one JSON line: {"orders": [[i, ...],
...]}, the sample numbers of each epoch in the order received. Gives up
after 20 s without a message.
"""

import json
import sys

import zmq

from demo_values import check, index_of
from tenbin_util import fail, tenbin


def main():
    endpoint, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, 20_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    orders = []
    try:
        for e in range(epochs):
            order = []
            for m in range(n):
                frames = sock.recv_multipart()
                if len(frames) != 6:
                    fail(f"epoch {e} message {m}: {len(frames)} frames, expected 6")
                arrays, names = tenbin.decode_list(frames, infos=True)
                i = index_of(arrays)
                check(f"epoch {e} message {m} (sample {i})", i, arrays, names)
                order.append(i)
            if sorted(order) != list(range(n)):
                fail(f"epoch {e} is not every sample once")
            orders.append(order)
    except zmq.Again:
        fail(f"timed out after {sum(map(len, orders))} messages")
    # Nothing more comes.
    sock.setsockopt(zmq.RCVTIMEO, 300)
    try:
        extra = sock.recv_multipart()
        fail(f"a message after the last epoch ({len(extra)} frames)")
    except zmq.Again:
        pass
    ctx.destroy(linger=0)
    print(json.dumps({"orders": orders}))


if __name__ == "__main__":
    main()
