#!/usr/bin/env python3
"""Times the reference tenbin (webdataset.tenbin) on the workloads of
benches/codec.rs, for `cargo bench --bench vs_python` to set beside tenstore.

Run with the venv python (webdataset 1.0.2, numpy):

    .venv/bin/python benches/python_peer.py          # one line per figure
    .venv/bin/python benches/python_peer.py --json   # one JSON object per line

Each figure is timed with timeit: one untimed round of `number` calls, then
`repeat` rounds of `number` calls; the per-call time of every round is
reported (min and median), so the Rust side can use the same counts, the
same warm-up and the same statistics (save_256MiB: one untimed save instead
of the round, on both sides).

Workloads (names shared with vs_python.rs):
  decode_1KiB       decode_buffer of one f32 tensor of 1 KiB ("x")
  decode_16MiB      decode_buffer of one f32 tensor of 16 MiB, from bytes
                    (how webdataset hands samples over; the reference's
                    slicing of bytes copies the payload)
  decode_16MiB_mv   the same from a memoryview (no copy)
  decode_sample3    decode_buffer of u1 3x64x64 "image", f4 [10] "logits",
                    i8 [1] "label"
  encode_sample3    encode_buffer of the same three arrays
  encode_64MiB      encode_buffer of a 4096x4096 f32 array (64 MiB)
  save_256MiB       save of one 256 MiB f32 array to a .ten file
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import timeit

import numpy as np
from webdataset import tenbin

KIB = 1 << 10
MIB = 1 << 20


def f32_data(n):
    """The values of benches/codec.rs's f32_data: (i % 1000) * 0.5."""
    return ((np.arange(n, dtype=np.int64) % 1000) * 0.5).astype(np.float32)


def sample3():
    c, y, x = np.meshgrid(np.arange(3), np.arange(64), np.arange(64), indexing="ij")
    image = ((c * 7 + y * 3 + x) % 256).astype(np.uint8)
    logits = f32_data(10)
    label = np.array([7], dtype=np.int64)
    return [image, logits, label], ["image", "logits", "label"]


def measure(stmt, number, repeat, nbytes, encoded_len, note, warmup=True):
    timer = timeit.Timer(stmt)
    if warmup:
        timer.timeit(number=number)  # untimed, as vs_python.rs's `time`
    rounds = timer.repeat(repeat=repeat, number=number)
    per_op = [t / number for t in rounds]
    return {
        "number": number,
        "repeat": repeat,
        "min_s": min(per_op),
        "median_s": statistics.median(per_op),
        "nbytes": nbytes,
        "encoded_len": encoded_len,
        "note": note,
    }


def workloads(scale):
    """Yields (name, result) for every figure. `scale` divides the counts
    (for a quick check)."""

    def n(k):
        return max(1, k // scale)

    # Decoding: one small tensor, one big one, a 3-tensor sample.
    small = bytes(tenbin.encode_buffer([f32_data(KIB // 4)], infos=["x"]))
    yield "decode_1KiB", measure(
        lambda: tenbin.decode_buffer(small), n(20000), 7, KIB, len(small),
        "tenbin.decode_buffer(bytes)")
    del small

    big = bytes(tenbin.encode_buffer([f32_data(16 * MIB // 4)], infos=["x"]))
    yield "decode_16MiB", measure(
        lambda: tenbin.decode_buffer(big), n(200), 7, 16 * MIB, len(big),
        "tenbin.decode_buffer(bytes): copies the payload")
    big_mv = memoryview(big)
    yield "decode_16MiB_mv", measure(
        lambda: tenbin.decode_buffer(big_mv), n(20000), 7, 16 * MIB, len(big),
        "tenbin.decode_buffer(memoryview): no copy")
    del big_mv, big

    arrays, infos = sample3()
    sample = bytes(tenbin.encode_buffer(arrays, infos=infos))
    sample_nbytes = sum(a.nbytes for a in arrays)
    yield "decode_sample3", measure(
        lambda: tenbin.decode_buffer(sample), n(10000), 7, sample_nbytes, len(sample),
        "tenbin.decode_buffer(bytes)")
    yield "encode_sample3", measure(
        lambda: tenbin.encode_buffer(arrays, infos=infos), n(10000), 7, sample_nbytes,
        len(sample), "tenbin.encode_buffer")

    # Encoding 64 MiB.
    a64 = f32_data(64 * MIB // 4).reshape(4096, 4096)
    enc_len = len(tenbin.encode_buffer([a64], infos=["x"]))
    yield "encode_64MiB", measure(
        lambda: tenbin.encode_buffer([a64], infos=["x"]), 1, n(15), 64 * MIB, enc_len,
        "tenbin.encode_buffer -> bytearray")
    del a64

    # Saving 256 MiB.
    a256 = f32_data(256 * MIB // 4)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.ten")
        tenbin.save(path, a256, infos=["x"])
        file_len = os.path.getsize(path)
        os.sync()  # start from no pending writeback (vs_python.rs does the same)
        yield "save_256MiB", measure(
            lambda: tenbin.save(path, a256, infos=["x"]), 1, n(15), 256 * MIB, file_len,
            "tenbin.save", warmup=False)


def human(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.3f} ns"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quick", action="store_true", help="a tenth of the counts")
    args = p.parse_args()
    if not args.json:
        import webdataset
        print(f"# webdataset {webdataset.__version__}, numpy {np.__version__}, "
              f"python {sys.version.split()[0]}")
        print(f"{'figure':<18} {'median/op':>12} {'min/op':>12} {'throughput':>14}")
    for name, r in workloads(10 if args.quick else 1):
        if args.json:
            print(json.dumps({"name": name, **r}), flush=True)
        else:
            gibs = r["nbytes"] / r["median_s"] / (1 << 30)
            print(f"{name:<18} {human(r['median_s']):>12} {human(r['min_s']):>12} "
                  f"{gibs:>10.2f} GiB/s   ({r['repeat']}x{r['number']}; {r['note']})",
                  flush=True)


if __name__ == "__main__":
    main()
