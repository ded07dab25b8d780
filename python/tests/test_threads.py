"""Threads that reopen a store or snapshot at the same time never deadlock
against the GIL.

A reader whose snapshot must be taken again (in a forked child, after a
failed refresh) opens it with the GIL released while holding the reader's
slot; other threads that want the slot meanwhile must wait without holding
the GIL, or the first can never finish.
"""

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import os, sys, threading
    import numpy as np
    import tenstore

    path, backend = sys.argv[1], sys.argv[2]
    with tenstore.Store(path, create=True, backend=backend) as s:
        for i in range(50):
            s.put(f"k{i}", {"x": np.full(1000, i, dtype=np.int32)})
    s = tenstore.Store(path, readonly=True)
    r = s.reader()
    pid = os.fork()
    if pid == 0:
        # The child's reader must take a new snapshot: 16 threads ask at once.
        seen, errors = [], []
        def read(i):
            try:
                seen.append(int(r[f"k{i}"]["x"][0]))
            except Exception as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=read, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        alive = sum(t.is_alive() for t in threads)
        ok = alive == 0 and not errors and sorted(seen) == list(range(16))
        print(f"alive={alive} errors={errors} seen={sorted(seen)}", flush=True)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_threads_of_a_forked_child_reopening_one_reader_all_finish(tmp_path):
    for backend in ["lmdb", "ten"]:
        out = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(tmp_path / backend), backend],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise AssertionError(
                f"{backend}: exit {out.returncode}\\nstdout: {out.stdout}\\nstderr: {out.stderr}"
            )
