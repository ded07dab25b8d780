"""Published stores read from Python by URL: ``s3://`` against moto's S3
server (started here on a free loopback port) and ``file://``, each
published with the ``tenstore publish`` CLI and read back equal to the
local store."""

import os
import pathlib
import pickle
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import tenstore
from tenstore.data import Dataset, IterableDataset

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUCKET = "pybucket"


def _cargo_bin():
    exe = ROOT / "target" / "debug" / "tenstore"
    if not exe.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "tenstore"], cwd=ROOT, check=True)
    return str(exe)


def sample(i):
    return {
        "image": np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16) + np.uint8(i % 200),
        "logits": np.linspace(0, 1, 10 + i % 7, dtype=np.float32) * i,
        "label": np.array([i], dtype=np.int64),
    }


def make_local(path, n=120):
    """A shard store of ``n`` samples in several small shards."""
    with tenstore.Store(str(path), create=True, backend="ten") as s:
        for start in range(0, n, 30):
            s.put_batch([(f"k{i:05d}", sample(i)) for i in range(start, min(n, start + 30))])
            s.flush()
    return {f"k{i:05d}".encode(): sample(i) for i in range(n)}


def publish(env, local, url):
    out = subprocess.run(
        [_cargo_bin(), "publish", str(local), url],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def equal(got, want):
    assert sorted(got.names) == sorted(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype and np.array_equal(got[name], arr), name


def cache_bytes(cache):
    """Bytes under ``cache``, each file rounded up to 4 KiB (what the cap
    counts)."""
    total = 0
    for root, _dirs, files in os.walk(cache):
        for f in files:
            try:
                total += -(-os.path.getsize(os.path.join(root, f)) // 4096) * 4096
            except FileNotFoundError:
                pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    """moto's S3 server on loopback with bucket ``BUCKET``; yields the
    environment variables that point the AWS clients at it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
                with urllib.request.urlopen(req, timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start")
                time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_env(moto, monkeypatch):
    """The process environment (read by the native S3 client) and a copy
    for the CLI, both pointing at moto."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    for k, v in moto.items():
        monkeypatch.setenv(k, v)
    return dict(os.environ)


def test_an_s3_url_reads_what_was_published(tmp_path, s3_env):
    local = tmp_path / "local"
    want = make_local(local)
    url = f"s3://{BUCKET}/py/set1"
    publish(s3_env, local, url)
    cache = tmp_path / "cache"

    store = tenstore.Store(url, cache_dir=str(cache), cache_size="64M")
    assert store.readonly and store.backend == "ten"
    assert store.path == url
    assert len(store) == len(want)
    r = store.reader()
    assert r.keys() == sorted(want)
    for k, v in want.items():
        equal(r[k], v)
    # A pass in write order, and a shuffled plan: every sample once.
    assert [s.key for s in r.samples(order="written")] == sorted(want)
    seen = {}
    for s in r.plan(seed=3, shuffle="full").samples():
        equal(s, want[s.key])
        seen[s.key] = seen.get(s.key, 0) + 1
    assert seen == {k: 1 for k in want}
    # Only the cache holds the bytes, within the cap.
    assert 0 < cache_bytes(cache) <= 64 << 20
    # Writes are refused.
    with pytest.raises(tenstore.StoreError):
        store.put("new", sample(0))
    # Pickled, it opens the same URL with the same cache options.
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.path == url
    equal(r2[b"k00007"], want[b"k00007"])
    s2 = pickle.loads(pickle.dumps(store))
    assert s2.path == url and len(s2) == len(want)


def test_datasets_take_a_url_and_a_small_cache(tmp_path, s3_env):
    local = tmp_path / "local"
    want = make_local(local, n=90)
    url = f"s3://{BUCKET}/py/set2"
    publish(s3_env, local, url)
    cache = tmp_path / "cache"
    # Far less than the store's ~90 x 1 KB samples: records are fetched
    # by ranged GETs and entries evicted, the cap never passed.
    cap = 48 * 1024
    ds = Dataset(url, cache_dir=cache, cache_size=cap)
    ds = pickle.loads(pickle.dumps(ds))
    assert len(ds) == len(want)
    for i in range(0, len(ds), 7):
        got = ds[i]
        for name, arr in want[ds.key(i)].items():
            assert np.array_equal(got[name], arr)
    it = IterableDataset(url, seed=1, shuffle="blocks:8", cache_dir=cache, cache_size=cap, with_key=True)
    it = pickle.loads(pickle.dumps(it))
    keys = []
    for s in it:
        for name, arr in want[s["__key__"]].items():
            assert np.array_equal(s[name], arr)
        keys.append(s["__key__"])
        assert cache_bytes(cache) <= cap
    assert sorted(keys) == sorted(want)


def test_a_file_url_reads_what_was_published(tmp_path):
    local = tmp_path / "local"
    want = make_local(local, n=50)
    url = (tmp_path / "published").as_uri()
    assert url.startswith("file:///")
    publish(dict(os.environ), local, url)
    cache = tmp_path / "cache"
    with tenstore.Store(url, readonly=True, cache_dir=cache, cache_size=1 << 30) as store:
        r = store.reader()
        assert len(r) == len(want)
        for k, v in want.items():
            equal(r[k], v)
        assert store.info()["samples"] == len(want)
    assert cache_bytes(cache) > 0


def test_bad_url_arguments_are_clear_errors(tmp_path):
    local = tmp_path / "local"
    make_local(local, n=3)
    with pytest.raises(ValueError, match="for store URLs"):
        tenstore.Store(str(local), readonly=True, cache_dir=str(tmp_path / "c"))
    url = (tmp_path / "nothing").as_uri()
    with pytest.raises(ValueError, match="read-only"):
        tenstore.Store(url, create=True)
    with pytest.raises(ValueError, match="shard stores"):
        tenstore.Store(url, backend="lmdb")
    with pytest.raises(ValueError, match="unit"):
        tenstore.Store(url, cache_size="10 parsecs")
    with pytest.raises(TypeError, match="cache_size"):
        tenstore.Store(url, cache_size=1.5)
    with pytest.raises(tenstore.StoreError, match="publish"):
        tenstore.Store(url, cache_dir=str(tmp_path / "c"))


def test_cache_arguments_are_checked_when_given(tmp_path, monkeypatch):
    url = (tmp_path / "nothing").as_uri()
    for bad in (-1, 0, 1 << 64, "0"):
        with pytest.raises(ValueError, match="cache_size"):
            tenstore.Store(url, cache_size=bad)
        with pytest.raises(ValueError, match="cache_size"):
            Dataset(url, cache_size=bad)
        with pytest.raises(ValueError, match="cache_size"):
            IterableDataset(url, cache_size=bad)
    for bad in (True, 1.5):
        with pytest.raises(TypeError, match="cache_size"):
            tenstore.Store(url, cache_size=bad)
        with pytest.raises(TypeError, match="cache_size"):
            Dataset(url, cache_size=bad)
    with pytest.raises(ValueError, match="cache_dir is empty"):
        tenstore.Store(url, cache_dir="")
    with pytest.raises(ValueError, match="cache_dir is empty"):
        IterableDataset(url, cache_dir="")
    # Cache options on a local store: refused when the dataset is made,
    # not in its loader workers.
    with pytest.raises(ValueError, match="for store URLs"):
        Dataset(str(tmp_path / "local"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="for store URLs"):
        IterableDataset(str(tmp_path / "local"), cache_size="1G")
    # A relative cache_dir names the same cache wherever the pickled copy
    # is opened.
    monkeypatch.chdir(tmp_path)
    ds = Dataset(url, cache_dir="rel", cache_size="1M")
    assert ds.cache_dir == str(tmp_path / "rel") and ds.cache_size == 1 << 20
    assert pickle.loads(pickle.dumps(ds)).cache_dir == str(tmp_path / "rel")
