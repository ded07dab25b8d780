"""Scale figures of both backends on tiny samples (one u1 [8] tensor).

Run by benches/scale.sh, which builds the release CLI and the generator
(examples/scale_gen.rs) first. For each sample count, in one run, the
same samples go into a shard store and an LMDB store, and for each:

- import: samples/s of the generator (library put_batch of 512, as
  `tenstore import` writes; a flush at the end), the writer's peak heap
  (counted by the generator's allocator) and the process's peak RSS;
- bytes of the store on disk, per sample;
- `tenstore get STORE KEY --json` and `tenstore info STORE --json`: wall
  time from process start to exit (median of 7 runs) and peak RSS;
- `tenstore serve STORE`: one REQ client getting random keys one at a
  time for a few seconds: requests/s.

Usage: python benches/scale.py TENSTORE SCALE_GEN WORKDIR [COUNT ...]
(default counts: 100000 1000000 10000000). Needs pyzmq.
"""

import os
import random
import shutil
import statistics
import subprocess
import sys
import time

import zmq


def timed_rss(cmd):
    """Runs cmd under /usr/bin/time; returns (stdout, wall seconds, peak RSS in MB)."""
    t = time.perf_counter()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kb=%M"] + cmd,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t
    rss = [l for l in p.stderr.splitlines() if l.startswith("maxrss_kb=")][-1]
    return p.stdout, wall, int(rss.split("=")[1]) / 1024


def du(path):
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
    )


def key(i):
    return "s%09d" % i


def cli_figure(tenstore, args, rounds=7):
    walls, rsss = [], []
    for _ in range(rounds):
        _, wall, rss = timed_rss([tenstore] + args)
        walls.append(wall)
        rsss.append(rss)
    return statistics.median(walls), max(rsss)


def serve_rate(tenstore, store, n, port, secs=4.0):
    addr = "tcp://127.0.0.1:%d" % port
    server = subprocess.Popen(
        [tenstore, "serve", store, "--bind", addr],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        server.stdout.readline()  # listening
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REQ)
        sock.connect(addr)
        rng = random.Random(7)
        keys = [key(rng.randrange(n)).encode() for _ in range(4096)]
        for k in keys[:200]:  # warm up
            sock.send_multipart([b"get", k])
            sock.recv_multipart()
        done, t = 0, time.perf_counter()
        while time.perf_counter() - t < secs:
            sock.send_multipart([b"get", keys[done % len(keys)]])
            status, *_ = sock.recv_multipart()
            assert status == b"ok", status
            done += 1
        rate = done / (time.perf_counter() - t)
        sock.close(linger=0)
        return rate
    finally:
        server.terminate()
        server.wait()


def main():
    tenstore, gen, work = sys.argv[1:4]
    counts = [int(c) for c in sys.argv[4:]] or [100_000, 1_000_000, 10_000_000]
    os.makedirs(work, exist_ok=True)
    rows = []
    for n in counts:
        for backend in ["ten", "lmdb"]:
            store = os.path.join(work, "%s-%d" % (backend, n))
            shutil.rmtree(store, ignore_errors=True)
            out, _, rss = timed_rss([gen, backend, store, str(n)])
            f = dict(kv.split("=") for kv in out.split())
            probe = key(n // 2)
            got = subprocess.run(
                [tenstore, "get", store, probe, "--json"], capture_output=True, check=True
            )
            assert probe.encode() in got.stdout, got.stdout
            get_s, get_rss = cli_figure(tenstore, ["get", store, probe, "--json"])
            info_s, info_rss = cli_figure(tenstore, ["info", store, "--json"])
            req = serve_rate(tenstore, store, n, 5800 + len(rows))
            row = dict(
                n=n,
                backend=backend,
                rate=float(f["rate"]),
                heap=int(f["heap_peak"]),
                rss=rss,
                disk=du(store),
                get_ms=get_s * 1e3,
                get_rss=get_rss,
                info_ms=info_s * 1e3,
                info_rss=info_rss,
                req=req,
            )
            rows.append(row)
            print(
                "{n:>9} {backend:>4}  import {rate:>9.0f}/s  heap {heapmb:7.1f} MB ({hps:5.1f} B/sample)"
                "  RSS {rss:7.1f} MB  disk {dps:5.0f} B/sample  get {get_ms:6.1f} ms {get_rss:6.1f} MB"
                "  info {info_ms:6.1f} ms {info_rss:6.1f} MB  serve {req:7.0f} req/s".format(
                    heapmb=row["heap"] / 1e6,
                    hps=row["heap"] / n,
                    dps=row["disk"] / n,
                    **row,
                ),
                flush=True,
            )
            shutil.rmtree(store, ignore_errors=True)
    base = {r["backend"]: r["rate"] for r in rows if r["n"] == counts[0]}
    for r in rows:
        print(
            "{n:>9} {backend:>4}  import rate {ratio:.2f}x its {first} rate".format(
                ratio=r["rate"] / base[r["backend"]], first=counts[0], **r
            )
        )
    for n in counts:
        by = {r["backend"]: r for r in rows if r["n"] == n}
        print(
            "{n:>9}  shard/LMDB: serve {s:.2f}x, get time {g:.2f}x, info time {i:.2f}x".format(
                n=n,
                s=by["ten"]["req"] / by["lmdb"]["req"],
                g=by["ten"]["get_ms"] / by["lmdb"]["get_ms"],
                i=by["ten"]["info_ms"] / by["lmdb"]["info_ms"],
            )
        )


if __name__ == "__main__":
    main()
