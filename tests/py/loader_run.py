"""Runs the README's data loader (tests/py/loader.py) against a live
`tenstore serve` of demo samples (see demo_values.py), the way
torch.utils.data.DataLoader would: the dataset is made and used in the
parent, then handed to worker processes.

usage: loader_run.py ENDPOINT N WORKERS fork|spawn [LOADER_DIR]

LOADER_DIR: where to import loader.py from (default: tests/py); the tests
pass a directory holding the code block of README.md.

- In the parent: len(dataset) == N, its keys are the N demo keys in order,
  dataset[i] is sample i's arrays by name (every element checked) for every
  i, and dataset[N] raises IndexError.
- In WORKERS processes started with the given method (fork: Linux's
  DataLoader default; spawn: macOS and Windows, which pickles the dataset),
  worker w reads and checks every sample i with i % WORKERS == w through its
  own socket.

Prints "ok N WORKERS" followed by one "worker W PID COUNT" line per worker.
Every process gives up after 60 s (SIGALRM), so nothing hangs.
"""

import multiprocessing
import os
import signal
import sys

if len(sys.argv) > 5:
    sys.path.insert(0, sys.argv[5])

from demo_values import NAMES, check, key  # noqa: E402
from loader import TenstoreDataset  # noqa: E402

TIMEOUT_S = 60


def check_item(where, i, item):
    names = [n for n in item if n != "__key__"]
    if not (names == NAMES):
        raise AssertionError(f"{where}: names {list(item)}")
    check(where, i, [item[n] for n in NAMES], NAMES)


def worker(dataset, w, workers, n, queue):
    signal.alarm(TIMEOUT_S)
    count = 0
    for i in range(w, n, workers):
        check_item(f"worker {w} sample {i}", i, dataset[i])
        count += 1
    queue.put((w, os.getpid(), count))


def main():
    signal.alarm(TIMEOUT_S)
    endpoint, n, workers, method = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dataset = TenstoreDataset(endpoint)
    if not (len(dataset) == n):
        raise AssertionError(f"len {len(dataset)}, expected {n}")
    if not (list(dataset.keys) == [key(i) for i in range(n)]):
        raise AssertionError("keys differ")
    for i in range(n):
        check_item(f"sample {i}", i, dataset[i])
    try:
        dataset[n]
        raise AssertionError("dataset[len] did not raise IndexError")
    except IndexError:
        pass

    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(dataset, w, workers, n, queue)) for w in range(workers)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=TIMEOUT_S) for _ in procs)
    for p in procs:
        p.join(TIMEOUT_S)
        if not (p.exitcode == 0):
            raise AssertionError(f"a worker exited with {p.exitcode}")
    if not (sum(c for _, _, c in results) == n):
        raise AssertionError(results)
    if not (len({pid for _, pid, _ in results} | {os.getpid()}) == workers + 1):
        raise AssertionError('failed: len({pid for _, pid, _ in results} | {os.getpid()}) == workers + 1')
    print(f"ok {n} {workers}")
    for w, pid, count in results:
        print(f"worker {w} {pid} {count}")


if __name__ == "__main__":
    main()
