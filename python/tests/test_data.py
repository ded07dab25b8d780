import multiprocessing as mp
import pickle

import numpy as np
import pytest

import tenstore
from tenstore.data import Dataset, IterableDataset

from test_store import fill


@pytest.mark.parametrize("backend", ["lmdb", "ten"])
def test_map_dataset(tmp_path, backend):
    path = str(tmp_path / "s")
    fill(path, backend, n=12)
    ds = Dataset(path)
    assert len(ds) == 12
    assert ds[3]["label"].tolist() == [3]
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[11]["logits"][0] == 11.0


@pytest.mark.parametrize("backend", ["lmdb", "ten"])
def test_iterable_split_covers_every_sample_once(tmp_path, backend):
    path = str(tmp_path / "s")
    fill(path, backend, n=25)
    for uneven in ["drop_last", "pad"]:
        labels = []
        for rank in range(2):
            for w in range(3):
                ds = IterableDataset(path, seed=1, rank=rank, world_size=2, worker=w, num_workers=3, uneven=uneven)
                labels += [int(s["label"][0]) for s in ds]
        if uneven == "drop_last":  # 12 each: one sample left out, none twice
            assert len(labels) == len(set(labels)) == 24
        else:  # 13 each: every sample, one twice
            assert len(labels) == 26 and set(labels) == set(range(25))
    a = [int(s["label"][0]) for s in IterableDataset(path, seed=1)]
    b = [int(s["label"][0]) for s in IterableDataset(path, seed=1)]
    ds = IterableDataset(path, seed=1)
    ds.set_epoch(1)
    c = [int(s["label"][0]) for s in ds]
    assert a == b and sorted(c) == sorted(a) and c != a
    assert [int(s["label"][0]) for s in IterableDataset(path, shuffle=False)] == list(range(25))


@pytest.mark.parametrize("backend", ["lmdb", "ten"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_torch_dataloader(tmp_path, backend, method):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    path = str(tmp_path / "s")
    fill(path, backend, n=16)
    ds = Dataset(path)
    assert len(ds) == 16  # opens the store in the parent before forking
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=method)
    labels = torch.cat([b["label"][:, 0] for b in loader]).tolist()
    assert labels == list(range(16))
    it = IterableDataset(path, seed=3)
    loader = DataLoader(it, batch_size=None, num_workers=2, multiprocessing_context=method)
    got = sorted(int(s["label"][0]) for s in loader)
    assert got == list(range(16))


def test_a_damaged_record_never_reaches_an_epoch(tmp_path):
    """Shard stores: one flipped data byte is refused by every epoch path
    (map-style Dataset, IterableDataset, reader iteration, plans,
    get(verify=True)); a plain random get hands it out unchecked."""
    path = tmp_path / "s"
    fill(path, "ten", n=6)
    logits = (np.arange(10, dtype=np.float32) + 3).tobytes()  # sample k0003
    [shard] = sorted(path.glob("*.ten"))
    data = bytearray(shard.read_bytes())
    at = data.find(logits)
    assert at >= 0 and data.find(logits, at + 1) < 0
    data[at + 5] ^= 0x10
    shard.write_bytes(bytes(data))

    ds = Dataset(path)
    labels = []
    for i in range(len(ds)):
        if ds.key(i) == b"k0003":
            with pytest.raises(tenstore.FormatError, match="checksum"):
                ds[i]
        else:
            labels.append(int(ds[i]["label"][0]))
    assert labels == [0, 1, 2, 4, 5]
    with pytest.raises(tenstore.FormatError, match="checksum"):
        list(IterableDataset(path, seed=1))

    with tenstore.Store(path) as s:
        r = s.reader()
        with pytest.raises(tenstore.FormatError, match="checksum"):
            list(r.samples("write"))
        with pytest.raises(tenstore.FormatError, match="checksum"):
            list(r.plan(seed=2, shuffle=True).samples())
        with pytest.raises(tenstore.FormatError, match="checksum"):
            r.get("k0003", verify=True)
        # Listing keys reads no record, so it is not refused.
        assert r.ordered_keys("write") == [f"k{i:04d}".encode() for i in range(6)]
        assert len(r.ordered_keys("shuffle", seed=3)) == 6
        damaged = r["k0003"]["logits"].tobytes()
        assert damaged != logits and len(damaged) == len(logits)
        assert int(r.get("k0004", verify=True)["label"][0]) == 4
