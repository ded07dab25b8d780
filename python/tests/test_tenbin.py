import hashlib
import io
import pathlib

import numpy as np
import pytest

import tenstore
from tenstore import tenbin

ref = pytest.importorskip("webdataset.tenbin")

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "tests" / "golden"
GOOD = sorted(p for p in GOLDEN.glob("*.ten"))
BAD = sorted((GOLDEN / "bad").glob("*.ten"))


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_golden_decodes_as_manifest_and_reference(path, manifest):
    buf = path.read_bytes()
    arrays, names = tenbin.decode_buffer(buf, infos=True)
    want = manifest["files"][path.name]
    assert len(arrays) == len(want)
    for a, name, w in zip(arrays, names, want):
        assert name == w["name"]
        assert list(a.shape) == w["shape"]
        assert sha(a) == w["sha256"]
    # Against the reference, where it can decode the file at all.
    try:
        ref_arrays = ref.decode_buffer(buf)
    except Exception:
        ref_arrays = None
    if ref_arrays is not None:
        for a, r in zip(arrays, ref_arrays):
            assert a.dtype == r.dtype and np.array_equal(a, r)
    # And we encode it back byte for byte.
    assert bytes(tenbin.encode_buffer(arrays, infos=names)) == buf


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_golden_multipart(path):
    mp = path.with_suffix(".multipart")
    if not mp.exists():
        pytest.skip("no multipart twin")
    arrays = tenbin.decode_buffer(path.read_bytes())
    frames = tenbin.encode_list(arrays)
    again = tenbin.decode_list(frames)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again))


def test_reference_reads_ours_and_we_read_the_reference():
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 255, (3, 64, 64), dtype=np.uint8),
        rng.standard_normal(10).astype(np.float32),
        np.array([7], dtype=np.int64),
        rng.standard_normal((2, 3)).astype(np.float16),
    ]
    ours = tenbin.encode_buffer(arrays, infos=["image", "logits", "label", "h"])
    theirs = ref.encode_buffer(arrays, infos=["image", "logits", "label", "h"])
    assert bytes(ours) == bytes(theirs)
    back, names = ref.decode_buffer(bytes(ours), infos=True)
    assert names == ["image", "logits", "label", "h"]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back))
    frames = ref.encode_list(arrays, infos=["a", "b", "c", "d"])
    got, names = tenbin.decode_list(frames, infos=True)
    assert names == ["a", "b", "c", "d"]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, got))
    ours_frames = tenbin.encode_list(arrays)
    assert [bytes(f) for f in ours_frames] == [bytes(f) for f in ref.encode_list(arrays)]
    assert [bytes(c) for c in tenbin.decode_chunks(ours)] == [bytes(c) for c in ref.decode_chunks(bytes(ours))]
    assert bytes(tenbin.encode_chunks([b"abc", b"x" * 70])) == bytes(ref.encode_chunks([memoryview(b"abc"), memoryview(b"x" * 70)]))


def test_zero_copy_views():
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    buf = bytes(tenbin.encode_buffer([a]))
    (b,) = tenbin.decode_buffer(buf)
    raw = np.frombuffer(buf, dtype=np.uint8)
    assert np.shares_memory(b, raw)
    assert not b.flags.writeable
    start = raw.__array_interface__["data"][0]
    addr = b.__array_interface__["data"][0]
    assert start <= addr and addr + b.nbytes <= start + len(buf)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        b[0, 0] = 1
    # A bytearray is viewed too, and cannot be resized while viewed.
    ba = bytearray(buf)
    (c,) = tenbin.decode_buffer(ba)
    assert np.shares_memory(c, np.frombuffer(ba, dtype=np.uint8))
    with pytest.raises(BufferError):
        ba.extend(b"x")


def test_views_keep_buffer_alive_under_gc():
    import gc

    a = np.arange(4096, dtype=np.int64)
    arrays = tenbin.decode_buffer(bytearray(tenbin.encode_buffer([a])))
    gc.collect()
    x = arrays[0]
    del arrays
    gc.collect()
    assert np.array_equal(x, a)


def test_load_memory_maps(tmp_path):
    a = np.arange(24, dtype=np.uint32).reshape(2, 3, 4)
    path = str(tmp_path / "x.ten")
    tenbin.save(path, a, np.float64(2.5) * np.ones(()), infos=["u", "s"])
    arrays, names = tenbin.load(path, infos=True)
    assert names == ["u", "s"]
    assert arrays[0].dtype == np.uint32 and np.array_equal(arrays[0], a)
    assert arrays[1].shape == () and arrays[1][()] == 2.5
    assert not arrays[0].flags.writeable
    assert type(arrays[0].base).__name__ == "KeepAlive"
    with pytest.raises(ValueError):
        tenbin.save(str(tmp_path / "x.npy"), a)
    assert np.array_equal(tenbin.load(str(tmp_path / "x.ten"))[0], a)


def test_stream_write_read():
    arrays = [np.arange(5, dtype=np.int16), np.zeros((2, 2), dtype=np.complex64)]
    s = io.BytesIO()
    tenbin.write(s, arrays, infos=["a", "c"])
    s.seek(0)
    got, names = tenbin.read(s, infos=True)
    assert names == ["a", "c"] and all(np.array_equal(x, y) for x, y in zip(arrays, got))
    s = io.BytesIO(s.getvalue()[:-70])
    with pytest.raises(tenstore.FormatError):
        tenbin.read(s)


def test_extension_dtypes():
    arrays = [np.array([True, False]), np.array([1 + 2j], dtype=np.complex128), np.array(3, dtype=np.uint32)]
    got = tenbin.decode_buffer(tenbin.encode_buffer(arrays))
    assert [g.dtype for g in got] == [a.dtype for a in arrays]
    assert all(np.array_equal(g, a) for g, a in zip(got, arrays))
    ml = pytest.importorskip("ml_dtypes")
    b = np.array([1.5, -2.0], dtype=ml.bfloat16)
    (g,) = tenbin.decode_buffer(tenbin.encode_buffer([b]))
    assert g.dtype == ml.bfloat16 and np.array_equal(g.astype(np.float32), [1.5, -2.0])


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_golden_raises_format_error(path):
    buf = path.read_bytes()
    with pytest.raises(tenstore.FormatError) as e:
        tenbin.decode_buffer(buf)
    assert isinstance(e.value, ValueError)
    assert "byte" in str(e.value) or "tensor" in str(e.value)


def test_truncations_never_crash():
    first = np.arange(100, dtype=np.float64)
    buf = bytes(tenbin.encode_buffer([first, np.ones((3, 3), np.uint8)]))
    boundary = len(tenbin.encode_buffer([first]))
    for n in range(1, len(buf)):
        if n == boundary:  # a whole first tensor: a valid, shorter buffer
            (a,) = tenbin.decode_buffer(buf[:n])
            assert np.array_equal(a, first)
            continue
        with pytest.raises(tenstore.FormatError):
            tenbin.decode_buffer(buf[:n])


def test_zmq_multipart_and_single():
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://t")
    b.connect("inproc://t")
    arrays = [np.arange(10, dtype=np.float32), np.array([1], dtype=np.int64)]
    tenbin.zsend_multipart(a, arrays, infos=["x", "y"])
    got, names = ref.zrecv_multipart(b, infos=True) if hasattr(ref, "zrecv_multipart") else tenbin.zrecv_multipart(b, infos=True)
    assert names == ["x", "y"] and all(np.array_equal(p, q) for p, q in zip(arrays, got))
    b.send_multipart(ref.encode_list(arrays))
    got = tenbin.zrecv_multipart(a)
    assert all(np.array_equal(p, q) for p, q in zip(arrays, got))
    tenbin.zsend_single(a, arrays)
    got = tenbin.zrecv_single(b)
    assert all(np.array_equal(p, q) for p, q in zip(arrays, got))
    a.close()
    b.close()
    ctx.term()


def test_sctp_style_datagram():
    import socket

    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    arrays = [np.arange(6, dtype=np.int32).reshape(2, 3)]
    tenbin.sctp_send(s, r.getsockname(), arrays, infos=["m"])
    got, names = tenbin.sctp_recv(r, infos=True)
    assert names == ["m"] and np.array_equal(got[0], arrays[0])
    s.close()
    r.close()
