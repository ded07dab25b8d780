"""Pulls what several `tenstore push` ranks stream.

usage: plan_pull.py COUNT END ENDPOINT [ENDPOINT ...]

Connects one PULL socket to each ENDPOINT and receives COUNT messages from
each (all sockets polled together). Each message is a sample's header and
data frames (tenbin.decode_list); the sample's number is its "i" array.
With END "end", then checks that no socket gets
another message within 500 ms. Prints one JSON line: {"got": [[i, ...],
...]}, the sample numbers from each endpoint in the order received.
Exits at once after the last (linger 0): samples a pusher had queued but
this did not receive are not counted.
"""

import json
import sys

import zmq

from tenbin_util import fail, tenbin


def main():
    count = int(sys.argv[1])
    end = sys.argv[2] == "end"
    endpoints = sys.argv[3:]
    ctx = zmq.Context()
    socks = []
    for ep in endpoints:
        s = ctx.socket(zmq.PULL)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 1)
        s.connect(ep)
        socks.append(s)
    got = [[] for _ in endpoints]
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    while any(len(g) < count for g in got):
        ready = dict(poller.poll(20_000))
        if not ready:
            fail(f"timed out with {[len(g) for g in got]} of {count} each")
        for r, s in enumerate(socks):
            if s in ready and len(got[r]) < count:
                frames = s.recv_multipart()
                arrays, names = tenbin.decode_list(frames, infos=True)
                if "i" not in names:
                    fail(f"a message without an 'i' array: {names}")
                got[r].append(int(arrays[names.index("i")][0]))
    if end:
        extra = dict(poller.poll(500))
        if extra:
            fail("a message after the last expected one")
    ctx.destroy(linger=0)
    print(json.dumps({"got": got}))


if __name__ == "__main__":
    main()
