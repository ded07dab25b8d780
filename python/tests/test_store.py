import gc
import multiprocessing as mp
import os
import pickle
import shutil
import subprocess
import time
import pathlib

import numpy as np
import pytest

import tenstore

ROOT = pathlib.Path(__file__).resolve().parents[2]
BACKENDS = ["lmdb", "ten"]


def sample(i):
    return {
        "image": np.full((3, 8, 8), i % 256, dtype=np.uint8),
        "logits": np.arange(10, dtype=np.float32) + i,
        "label": np.array([i], dtype=np.int64),
    }


def fill(path, backend, n=20):
    with tenstore.Store(path, create=True, backend=backend) as s:
        s.put_batch([(f"k{i:04d}", sample(i)) for i in range(n)])
        s.flush()


def check(s, i):
    want = sample(i)
    assert s.names == ["image", "logits", "label"]
    for k, v in want.items():
        assert s[k].dtype == v.dtype and np.array_equal(s[k], v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_put_get_keys_delete(tmp_path, backend):
    path = str(tmp_path / "s")
    store = tenstore.Store(path, create=True, backend=backend)
    store.put("a", sample(1))
    store.put(b"b", [("image", sample(2)["image"]), ("logits", sample(2)["logits"]), ("label", sample(2)["label"])])
    assert len(store) == 2
    assert store.keys() == [b"a", b"b"]
    assert store.keys("b") == [b"b"]
    assert store.info()["samples"] == 2 and store.info()["backend"] == backend
    r = store.reader()
    check(r["a"], 1)
    check(r[b"b"], 2)
    assert r["a"].key == b"a"
    assert list(r["a"]) == ["image", "logits", "label"]
    assert r.get("zzz") is None and r.get("zzz", 5) == 5
    with pytest.raises(KeyError):
        r["zzz"]
    assert "a" in r and "zzz" not in r
    assert not r["a"]["image"].flags.writeable
    store.delete("a")
    assert len(r) == 2  # a snapshot
    r.refresh()
    assert len(r) == 1 and r.keys() == [b"b"]
    with pytest.raises(KeyError):
        store.delete(["b", "nope"])
    assert len(store) == 1  # all or none
    with pytest.raises(ValueError):
        store.put("x", {"waytoolongname": np.zeros(1)})
    store.close()
    with pytest.raises(ValueError):
        len(store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_orders(tmp_path, backend):
    path = str(tmp_path / "s")
    with tenstore.Store(path, create=True, backend=backend) as s:
        for i in [3, 1, 2, 0]:
            s.put(f"k{i}", sample(i))
        r = s.reader()
        assert [x.key for x in r] == [b"k0", b"k1", b"k2", b"k3"]
        written = [x.key for x in r.samples("write")]
        if backend == "ten":
            assert written == [b"k3", b"k1", b"k2", b"k0"]
        a = [x.key for x in r.samples("shuffle", 7)]
        assert a == [x.key for x in r.samples("shuffle", 7)]
        assert sorted(a) == [b"k0", b"k1", b"k2", b"k3"]
        assert r.ordered_keys("shuffle", 7) == a


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_copy_and_lifetime_under_gc(tmp_path, backend):
    path = str(tmp_path / "s")
    store = tenstore.Store(path, create=True, backend=backend)
    big = np.arange(64 * 1024, dtype=np.float32)
    store.put("big", {"x": big})
    r = store.reader()
    x = r["big"]["x"]
    assert not x.flags.writeable and x.flags.aligned
    # The data address lies inside the store's data file mapping.
    maps = open("/proc/self/maps").read().splitlines()
    addr = x.__array_interface__["data"][0]
    data_file = "data.mdb" if backend == "lmdb" else ".ten"
    inside = [m for m in maps if data_file in m and int(m.split("-")[0], 16) <= addr < int(m.split()[0].split("-")[1], 16)]
    assert inside, "array data is not inside the store's memory map"
    del r, store
    gc.collect()
    assert np.array_equal(x, big)
    y = x[::2].copy()
    assert np.array_equal(y, big[::2])


def test_lmdb_map_grows_with_python_snapshots_released(tmp_path):
    path = str(tmp_path / "s")
    store = tenstore.Store(path, create=True, backend="lmdb")
    store.put("a", {"x": np.zeros(10)})
    r = store.reader()
    held = r["a"]["x"]
    del r, held
    gc.collect()
    size = store.info()["map_size"]
    # Write past the initial 1 GiB map: it must double.
    chunk = np.zeros(64 * 1024 * 1024, dtype=np.uint8)
    for i in range(20):
        store.put(f"big{i}", {"x": chunk})
    assert store.info()["map_size"] > size
    assert len(store) == 21


def test_bad_stored_value_raises_format_error(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    path = str(tmp_path / "s")
    with tenstore.Store(path, create=True) as s:
        s.put("good", sample(0))
    env = lmdb.open(path)
    with env.begin(write=True) as txn:
        txn.put(b"bad", b"~TenBin~garbage")
    env.close()
    gc.collect()
    r = tenstore.Store(path).reader()
    with pytest.raises(tenstore.FormatError):
        r["bad"]
    check(r["good"], 0)


def test_missing_store_is_store_error(tmp_path):
    with pytest.raises(tenstore.StoreError):
        tenstore.Store(str(tmp_path / "none"))
    assert issubclass(tenstore.StoreError, OSError)
    assert issubclass(tenstore.FormatError, ValueError)


def _child_read(obj, q):
    r = obj.reader() if isinstance(obj, tenstore.Store) else obj
    s = r["k0005"]
    q.put((os.getpid(), s["label"].tolist(), len(r)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickle_and_workers(tmp_path, backend, method):
    path = str(tmp_path / "s")
    fill(path, backend)
    store = tenstore.Store(path, readonly=True)
    reader = store.reader()
    # A live snapshot in the parent (a forked child inherits the reader
    # and releases it without ending the parent's transaction).
    assert reader["k0001"]["label"].tolist() == [1]
    again = pickle.loads(pickle.dumps(reader))
    assert again.keys() == reader.keys()
    assert pickle.loads(pickle.dumps(store)).path == store.path
    ctx = mp.get_context(method)
    q = ctx.Queue()
    for obj in (store, reader):
        p = ctx.Process(target=_child_read, args=(obj, q))
        p.start()
        pid, label, n = q.get(timeout=60)
        p.join(60)
        assert p.exitcode == 0 and pid != os.getpid()
        assert label == [5] and n == 20
    # The parent's snapshot still works after the children ran and exited.
    parent_arr = reader["k0001"]["label"]
    assert parent_arr.tolist() == [1]
    assert reader["k0002"]["label"].tolist() == [2]


def _cargo_bin():
    exe = ROOT / "target" / "debug" / "tenstore"
    if not exe.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "tenstore"], cwd=ROOT, check=True)
    return str(exe)


def test_python_reader_follows_rust_writer(tmp_path):
    """The scenario py-lmdb cannot serve: a Rust writer and a Python reader
    on one live LMDB store."""
    exe = _cargo_bin()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        np.save(src / f"s{i:04d}.npy", np.full(4, i, dtype=np.int32))
    path = str(tmp_path / "store")
    fill(path, "lmdb", n=1)
    reader = tenstore.Store(path, readonly=True).reader()
    assert len(reader) == 1
    proc = subprocess.Popen([exe, "import", path, str(src)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reader.refresh()
        seen.append(len(reader))
        if proc.poll() is not None and seen[-1] == 301:
            break
        time.sleep(0.01)
    assert proc.wait() == 0, proc.stderr.read()
    reader.refresh()
    assert len(reader) == 301
    assert seen == sorted(seen)  # never goes back
    for k in reader.keys():
        if k != b"k0000":
            s = reader[k]
            (name,) = s.names
            assert s[name].tolist() == [int(k.decode().strip("s"))] * 4
