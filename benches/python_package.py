#!/usr/bin/env python3
"""The Python package `tenstore` beside its peers, in one run (issue 14's
performance goals). Every figure is printed beside its peer's from the same
run, with the ratio; a peer that cannot be imported or run is an error
unless `--skip PEER` names it.

Run with a Python that has tenstore, numpy, torch, webdataset 1.0.2, lmdb,
pyzmq, litdata and mosaicml-streaming (see the README's Benchmarks section
for the venv), from the repository root, after `cargo build --release`
(the `serve` peer runs target/release/tenstore):

    python benches/python_package.py                 # all figures
    python benches/python_package.py --quick         # 2,000 samples, fewer rounds
    python benches/python_package.py --skip litdata --skip streaming

The standard sample: u1 3x64x64 "image", f4 [10] "logits", i8 [1] "label"
(12,704 bytes of tenbin), 10,000 of them under keys s000000000..., each
with its own label and image bytes. Written once into a tenstore LMDB store,
a LitData dataset (`BinaryWriter`, uncompressed) and a MosaicML streaming
dataset (`MDSWriter`, uncompressed, fixed-shape ndarray columns), all in one
scratch directory on local disk (no cloud, no network).

Figures (samples/s or time per call; the median of the timed rounds, each
round preceded by nothing but the other contenders' rounds: contenders run
interleaved, round after round, after one untimed round each):

  get     `reader[key]` + one element of each array, random key order,
          one pass over all keys per round; beside
            lmdb+wds   py-lmdb `txn.get` (one read transaction per round) +
                       `webdataset.tenbin.decode_buffer`, same store, same keys
            litdata    litdata `StreamingDataset[i]`, same samples, same order
            streaming  MosaicML `StreamingDataset[i]`, same samples, same order
          Every contender touches image[2,63,63], logits[9], label[0] and
          the sums are checked to agree.
  tenbin  `tenstore.tenbin` beside `webdataset.tenbin`: decode_buffer and
          encode_buffer of the standard sample (from bytes, as webdataset
          hands samples over), and tenstore's decode_buffer of one 16 MiB
          array beside one of 1 KiB.
  epoch   a shuffled epoch through torch `DataLoader(num_workers=4,
          batch_size=BATCH, shuffle=True, persistent_workers=True)` over
          `tenstore.data.Dataset`; beside
            serve      the same loader over the README's `tenstore serve` +
                       pyzmq dataset (tests/py/loader.py), release binary,
                       default 4 server threads, same store
          Timed from iter() to the last batch; workers are started and
          warmed by one untimed epoch first.

The machine matters: on a shared or small machine the figures move with
the load; the ratios, measured interleaved in one run, move less.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = ("lmdb+wds", "litdata", "streaming", "serve")

GOALS = {  # figure -> (goal ratio, floor ratio or None)
    "get vs lmdb+wds": (20.0, 10.0),
    "get vs litdata": (2.0, None),
    "decode_buffer sample": (5.0, None),
    "encode_buffer sample": (3.0, None),
    "epoch vs serve": (5.0, None),
}


class PeerMissing(Exception):
    """A peer could not be imported or run."""


def sample(i):
    """The i-th standard sample: its own image bytes and label."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(64), np.arange(64), indexing="ij")
    image = ((c * 7 + y * 3 + x + i) % 256).astype(np.uint8)
    logits = (((np.arange(10) + i) % 1000) * 0.5).astype(np.float32)
    label = np.array([i], dtype=np.int64)
    return {"image": image, "logits": logits, "label": label}


def key(i):
    return f"s{i:09}".encode()


def touch(image, logits, label):
    return int(image[2, 63, 63]) + int(logits[9] * 2) + int(label[0])


# --------------------------------------------------------------------- writing


def write_tenstore(path, n):
    import tenstore

    with tenstore.Store(path, create=True, backend="lmdb") as store:
        batch = []
        for i in range(n):
            batch.append((key(i), sample(i)))
            if len(batch) == 1000:
                store.put_batch(batch)
                batch = []
        if batch:
            store.put_batch(batch)
        store.flush()


def write_litdata(path, n):
    try:
        from litdata.streaming.writer import BinaryWriter
    except ImportError as e:
        raise PeerMissing(f"litdata: {e} (pip install litdata)") from e
    w = BinaryWriter(path, chunk_bytes="64MB")
    for i in range(n):
        w.add_item(i, sample(i))
    w.done()
    w.merge()


def write_mds(path, n):
    try:
        from streaming import MDSWriter
    except ImportError as e:
        raise PeerMissing(f"streaming: {e} (pip install mosaicml-streaming)") from e
    columns = {
        "image": "ndarray:uint8:3,64,64",
        "logits": "ndarray:float32:10",
        "label": "ndarray:int64:1",
    }
    with MDSWriter(out=path, columns=columns, compression=None, size_limit=1 << 26) as w:
        for i in range(n):
            w.write(sample(i))


# ------------------------------------------------------------------ get rounds


def get_contenders(dirs, n, order, skip):
    """name -> a function doing one round (all of `order`), returning the
    checksum of touched elements."""
    import tenstore

    reader = tenstore.Store(dirs["tenstore"], readonly=True).reader()
    keys = [key(i) for i in order]

    def ours():
        acc = 0
        for k in keys:
            s = reader[k]
            acc += touch(s["image"], s["logits"], s["label"])
        return acc

    out = {"tenstore": ours}

    if "lmdb+wds" not in skip:
        try:
            import lmdb
            from webdataset import tenbin as wtenbin
        except ImportError as e:
            raise PeerMissing(f"lmdb+wds: {e}") from e
        # lock=False: tenstore's LMDB library and py-lmdb's disagree on the
        # lock file's format (MDB_VERSION_MISMATCH); nothing writes meanwhile.
        env = lmdb.open(dirs["tenstore"], readonly=True, lock=False, subdir=True,
                        max_readers=254, map_size=1 << 30)

        def lmdb_wds():
            acc = 0
            with env.begin() as txn:
                for k in keys:
                    a = wtenbin.decode_buffer(txn.get(k))
                    acc += touch(a[0], a[1], a[2])
            return acc

        out["lmdb+wds"] = lmdb_wds

    if "litdata" not in skip:
        try:
            from litdata import StreamingDataset as LitDataset
        except ImportError as e:
            raise PeerMissing(f"litdata: {e}") from e
        # batch_decode=False: the default ("auto") deserializes a window of
        # 256 items around each index, for sequential reads; at random
        # indices that is ~100x slower than decoding the one item.
        lit = LitDataset(dirs["litdata"], batch_decode=False)
        if len(lit) != n:
            raise PeerMissing(f"litdata: {len(lit)} samples, expected {n}")

        def litdata():
            acc = 0
            for i in order:
                s = lit[i]
                acc += touch(s["image"], s["logits"], s["label"])
            return acc

        out["litdata"] = litdata

    if "streaming" not in skip:
        try:
            from streaming import StreamingDataset as MdsDataset
        except ImportError as e:
            raise PeerMissing(f"streaming: {e}") from e
        mds = MdsDataset(local=dirs["streaming"], remote=None, shuffle=False, batch_size=1)
        if len(mds) != n:
            raise PeerMissing(f"streaming: {len(mds)} samples, expected {n}")

        def streaming():
            acc = 0
            for i in order:
                s = mds[i]
                acc += touch(s["image"], s["logits"], s["label"])
            return acc

        out["streaming"] = streaming

    return out


def interleaved(contenders, rounds, ops):
    """Runs every contender once untimed, then `rounds` rounds of each in
    turn; returns name -> list of ops/s, and checks the checksums agree."""
    sums = {name: f() for name, f in contenders.items()}
    if len(set(sums.values())) != 1:
        raise SystemExit(f"contenders disagree on the data: {sums}")
    rates = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            t0 = time.perf_counter()
            f()
            rates[name].append(ops / (time.perf_counter() - t0))
    return rates


# ---------------------------------------------------------------------- tenbin


def tenbin_figures(rounds, scale):
    """name -> (ours per-call seconds list, reference's list or None)."""
    from webdataset import tenbin as wtenbin

    from tenstore import tenbin as ttenbin

    s = sample(7)
    arrays, names = [s["image"], s["logits"], s["label"]], ["image", "logits", "label"]
    buf = bytes(wtenbin.encode_buffer(arrays, infos=names))
    if bytes(ttenbin.encode_buffer(arrays, infos=names)) != buf:
        raise SystemExit("tenstore.tenbin.encode_buffer differs from the reference")
    for x, y in zip(ttenbin.decode_buffer(buf), wtenbin.decode_buffer(buf)):
        if x.dtype != y.dtype or not np.array_equal(x, y):
            raise SystemExit("tenstore.tenbin.decode_buffer differs from the reference")
    small = bytes(wtenbin.encode_buffer([np.zeros(256, np.float32)], infos=["x"]))
    big = bytes(wtenbin.encode_buffer([np.zeros(4 << 20, np.float32)], infos=["x"]))

    def n(k):
        return max(1, k // scale)

    pairs = {
        "decode_buffer sample": (lambda: ttenbin.decode_buffer(buf),
                                 lambda: wtenbin.decode_buffer(buf), n(20000)),
        "encode_buffer sample": (lambda: ttenbin.encode_buffer(arrays, infos=names),
                                 lambda: wtenbin.encode_buffer(arrays, infos=names), n(20000)),
        "decode_buffer 1 KiB": (lambda: ttenbin.decode_buffer(small),
                                lambda: wtenbin.decode_buffer(small), n(20000)),
        "decode_buffer 16 MiB": (lambda: ttenbin.decode_buffer(big),
                                 lambda: wtenbin.decode_buffer(big), None),
    }
    out = {}
    for name, (ours, ref, number) in pairs.items():
        # The reference copies a 16 MiB payload out of bytes: fewer calls.
        t_ours, t_ref = timeit.Timer(ours), timeit.Timer(ref)
        num_ours = number or n(20000)
        num_ref = number or n(200)
        t_ours.timeit(num_ours)
        t_ref.timeit(num_ref)
        a, b = [], []
        for _ in range(rounds):
            a.append(t_ours.timeit(num_ours) / num_ours)
            b.append(t_ref.timeit(num_ref) / num_ref)
        out[name] = (a, b)
    return out


# ----------------------------------------------------------------------- epoch


def start_serve(binary, store):
    if not os.path.exists(binary):
        raise PeerMissing(f"serve: no {binary} (cargo build --release)")
    proc = subprocess.Popen([binary, "serve", store, "--bind", "tcp://127.0.0.1:*"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (tcp://\S+)", line)
    if not m:
        proc.kill()
        raise PeerMissing(f"serve: unexpected first line {line!r}")
    return proc, m.group(1)


_WORKER_DS = None


def _worker_init(ds):
    global _WORKER_DS
    _WORKER_DS = ds


def _read_share(indices):
    """One worker's share of an epoch, read in its own process: the sum of
    the touched elements (nothing goes back but that number)."""
    acc = 0
    for i in indices:
        s = _WORKER_DS[i]
        acc += touch(s["image"], s["logits"], s["label"])
    return acc


def raw_epoch(ds, n, workers, seed0):
    """The same shuffled epoch read by `workers` forked processes, each its
    stride of the order, without torch: the read rate the loader's own
    transfer of batches to the main process leaves out."""
    import multiprocessing as mp

    pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(ds,))
    epoch = [seed0]

    def run():
        epoch[0] += 1
        order = np.random.default_rng(epoch[0]).permutation(n).tolist()
        return sum(pool.map(_read_share, [order[w::workers] for w in range(workers)]))

    return run, pool


def numpy_collate(batch):
    """Stacks a batch into numpy arrays (pickled through the worker's pipe)
    instead of torch's default, which sends every tensor as a shared-memory
    file descriptor over a new connection."""
    return {name: np.stack([s[name] for s in batch]) for name in batch[0]}


def numpy_convert(sample):
    return {name: np.asarray(a) for name, a in sample.items()}


def epoch_figures(store, n, rounds, batch, binary, skip, workers):
    import torch.utils.data as tud

    from tenstore.data import Dataset

    def loader(ds, collate=None):
        return tud.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                              persistent_workers=True, collate_fn=collate,
                              generator=__import__("torch").Generator().manual_seed(0))

    def epoch_of(dl):
        def run():
            acc = 0
            for b in dl:
                acc += int(b["label"].sum())
            return acc
        return run

    proc, pools = None, []
    try:
        datasets = {"tenstore": Dataset(store)}
        if "serve" not in skip:
            try:
                sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
                from loader import TenstoreDataset
            except ImportError as e:
                raise PeerMissing(f"serve: {e}") from e
            proc, addr = start_serve(binary, store)
            datasets["serve"] = TenstoreDataset(addr)
        contenders = {name: epoch_of(loader(ds)) for name, ds in datasets.items()}
        loader_rates = interleaved(contenders, rounds, n)
        contenders = {name: epoch_of(loader(ds, numpy_collate if batch else numpy_convert))
                      for name, ds in datasets.items()}
        numpy_rates = interleaved(contenders, rounds, n)
        contenders = {}
        for name, ds in datasets.items():
            contenders[name], pool = raw_epoch(ds, n, workers, 1000)
            pools.append(pool)
        raw_rates = interleaved(contenders, rounds, n)
        return loader_rates, numpy_rates, raw_rates
    finally:
        for pool in pools:
            pool.terminate()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


# ---------------------------------------------------------------------- report


def fmt_rate(r):
    return f"{r / 1000:,.1f} k/s"


def fmt_time(s):
    for unit, k in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= k:
            return f"{s / k:.2f} {unit}"
    return f"{s * 1e9:.2f} ns"


def verdict(name, ratio):
    if name not in GOALS:
        return ""
    goal, floor = GOALS[name]
    if ratio >= goal:
        return f"goal >= {goal:g}x met"
    if floor is not None and ratio >= floor:
        return f"goal >= {goal:g}x missed, floor {floor:g}x met"
    return f"goal >= {goal:g}x MISSED"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--epoch-rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=32, help="DataLoader batch size (0: None)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--skip", action="append", default=[], choices=PEERS,
                   help="leave this peer out (else a missing peer is an error)")
    p.add_argument("--only", action="append", default=[], choices=("get", "tenbin", "epoch"))
    p.add_argument("--quick", action="store_true", help="2,000 samples, 3 rounds")
    p.add_argument("--tenstore", default=os.path.join(ROOT, "target", "release", "tenstore"),
                   help="the release binary for the serve peer")
    p.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args()
    if args.quick:
        args.samples, args.rounds, args.epoch_rounds = 2000, 3, 3
    skip = set(args.skip)
    parts = set(args.only) or {"get", "tenbin", "epoch"}

    # torch's default collate warns (once per worker) that the views are
    # read-only; it copies them into tensors anyway.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    # ... and that 4 workers are more than the CPUs of a small machine.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    import tenstore

    versions = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}",
                f"tenstore {tenstore.__file__}"]
    for mod, label in (("webdataset", "webdataset"), ("litdata", "litdata"),
                       ("streaming", "mosaicml-streaming"), ("torch", "torch"),
                       ("lmdb", "lmdb")):
        try:
            versions.append(f"{label} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - reported below if the peer is used
            pass
    print("# " + ", ".join(versions))
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.samples} samples")

    scratch = args.dir or tempfile.mkdtemp(prefix="tenstore-pybench-")
    dirs = {name: os.path.join(scratch, name) for name in ("tenstore", "litdata", "streaming")}
    rows = []  # (figure, ours, peer, ratio, verdict)
    try:
        t0 = time.perf_counter()
        write_tenstore(dirs["tenstore"], args.samples)
        for name, writer in (("litdata", write_litdata), ("streaming", write_mds)):
            if name in skip or "get" not in parts:
                continue
            try:
                writer(dirs[name], args.samples)
            except PeerMissing as e:
                raise SystemExit(f"error: {e}; pass --skip {name} to leave it out") from e
        print(f"# wrote the stores in {time.perf_counter() - t0:.1f} s under {scratch}")

        if "get" in parts:
            order = np.random.default_rng(1).permutation(args.samples).tolist()
            try:
                contenders = get_contenders(dirs, args.samples, order, skip)
            except PeerMissing as e:
                raise SystemExit(f"error: {e}; pass --skip to leave it out") from e
            rates = interleaved(contenders, args.rounds, len(order))
            ours = statistics.median(rates["tenstore"])
            print(f"\nget: reader[key] + one element of each array, {len(order)} random keys,"
                  f" median of {args.rounds} interleaved rounds")
            print(f"  {'tenstore':<10} {fmt_rate(ours):>12}   "
                  f"(rounds {', '.join(fmt_rate(r) for r in rates['tenstore'])})")
            for name in ("lmdb+wds", "litdata", "streaming"):
                if name not in rates:
                    continue
                peer = statistics.median(rates[name])
                fig = f"get vs {name}"
                v = verdict(fig, ours / peer)
                print(f"  {name:<10} {fmt_rate(peer):>12}   tenstore {ours / peer:6.2f}x  {v}")
                rows.append((fig, fmt_rate(ours), fmt_rate(peer), ours / peer, v))

        if "tenbin" in parts:
            scale = 10 if args.quick else 1
            figs = tenbin_figures(args.rounds, scale)
            print(f"\ntenbin: tenstore.tenbin beside webdataset.tenbin (from bytes),"
                  f" median per call of {args.rounds} interleaved rounds")
            for name, (a, b) in figs.items():
                ours, ref = statistics.median(a), statistics.median(b)
                v = verdict(name, ref / ours)
                print(f"  {name:<22} tenstore {fmt_time(ours):>10}  webdataset {fmt_time(ref):>10}"
                      f"  {ref / ours:7.2f}x  {v}")
                rows.append((name, fmt_time(ours), fmt_time(ref), ref / ours, v))
            big, small = statistics.median(figs["decode_buffer 16 MiB"][0]), \
                statistics.median(figs["decode_buffer 1 KiB"][0])
            ok = "goal < 2x met" if big / small < 2 else "goal < 2x MISSED"
            print(f"  tenstore decode_buffer 16 MiB / 1 KiB: {big / small:.2f}x  {ok}")
            rows.append(("decode 16 MiB / 1 KiB (tenstore)", fmt_time(big), fmt_time(small),
                         big / small, ok))

        if "epoch" in parts:
            batch = args.batch or None
            try:
                both = epoch_figures(dirs["tenstore"], args.samples, args.epoch_rounds, batch,
                                     args.tenstore, skip, args.workers)
            except PeerMissing as e:
                raise SystemExit(f"error: {e}; pass --skip serve to leave it out") from e
            titles = (f"DataLoader num_workers={args.workers}, batch_size={batch}",
                      f"the same DataLoader with a numpy collate_fn",
                      f"{args.workers} forked processes, no torch, nothing sent back")
            figs = ("epoch vs serve", "epoch vs serve, numpy collate",
                    "epoch vs serve, no DataLoader")
            for (title, rates), fig in zip(zip(titles, both), figs):
                ours = statistics.median(rates["tenstore"])
                print(f"\nepoch: shuffled epoch, {title}, median of {args.epoch_rounds} "
                      f"interleaved epochs")
                print(f"  {'tenstore':<10} {fmt_rate(ours):>12}   "
                      f"(epochs {', '.join(fmt_rate(r) for r in rates['tenstore'])})")
                if "serve" in rates:
                    peer = statistics.median(rates["serve"])
                    v = verdict(fig, ours / peer)
                    print(f"  {'serve':<10} {fmt_rate(peer):>12}   tenstore {ours / peer:6.2f}x"
                          f"  {v}   (epochs {', '.join(fmt_rate(r) for r in rates['serve'])})")
                    rows.append((fig, fmt_rate(ours), fmt_rate(peer), ours / peer, v))
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n# load average {os.getloadavg()[0]:.2f} at the end")
    print("\n| figure | tenstore | peer | ratio | |")
    print("|---|---|---|---|---|")
    for fig, ours, peer, ratio, v in rows:
        print(f"| {fig} | {ours} | {peer} | {ratio:.2f}x | {v} |")


if __name__ == "__main__":
    main()
