"""Epoch plans from Python: ``Reader.plan`` and ``tenstore.data.IterableDataset``."""

import pickle

import numpy as np
import pytest

import tenstore
from tenstore.data import IterableDataset

from test_store import fill

BACKENDS = ["lmdb", "ten"]
SHUFFLES = [None, "full", "blocks:3"]


def labels(samples):
    return [int(s["label"][0]) for s in samples]


@pytest.fixture(params=BACKENDS)
def store(tmp_path, request):
    path = str(tmp_path / "s")
    fill(path, request.param, n=23)
    return path


def epoch_order(path, **kw):
    """The global order: the one partition of world 1, worker 1."""
    return labels(tenstore.Store(path, readonly=True).reader().plan(**kw))


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("uneven", ["drop_last", "pad"])
@pytest.mark.parametrize("world,workers,batch", [(1, 1, 1), (2, 3, 1), (3, 2, 2), (4, 1, 5), (5, 4, 1)])
def test_partitions_are_the_epoch(store, shuffle, uneven, world, workers, batch):
    n = 23
    reader = tenstore.Store(store, readonly=True).reader()
    order = epoch_order(store, seed=5, epoch=1, shuffle=shuffle)
    assert sorted(order) == list(range(n))
    by_position = {}
    per_rank = []
    for rank in range(world):
        got = 0
        for w in range(workers):
            plan = reader.plan(seed=5, epoch=1, shuffle=shuffle, rank=rank, world_size=world,
                               worker=w, num_workers=workers, uneven=uneven, batch_size=batch)
            items = labels(plan)
            assert len(items) == len(plan)
            positions = plan.positions()
            assert len(positions) == len(items)
            for p, label in zip(positions, items):
                assert p % world == rank
                assert p not in by_position
                # Every partition's item is the global order's sample there.
                assert label == order[p % n]
                by_position[p] = label
            got += len(items)
        per_rank.append(got)
    # Equal counts per rank.
    want = n // world if uneven == "drop_last" else -(-n // world)
    assert per_rank == [want] * world
    # The partitions interleave back into a prefix of the global order.
    assert sorted(by_position) == list(range(want * world))
    seen = list(by_position.values())
    if uneven == "drop_last":
        assert len(set(seen)) == len(seen) == want * world
    else:
        assert set(seen) == set(range(n))


def test_seed_and_epoch_fix_the_order(store):
    a = epoch_order(store, seed=1, epoch=0, shuffle="full")
    assert a == epoch_order(store, seed=1, epoch=0, shuffle="full")
    assert a != epoch_order(store, seed=1, epoch=1, shuffle="full")
    assert a != epoch_order(store, seed=2, epoch=0, shuffle="full")
    b = epoch_order(store, seed=1, epoch=0, shuffle="blocks:4")
    assert sorted(b) == list(range(23)) and b != list(range(23))
    assert epoch_order(store) == list(range(23))  # no shuffle: storage order


def test_plan_samples_are_zero_copy_and_keys_match(store):
    reader = tenstore.Store(store, readonly=True).reader()
    plan = reader.plan(seed=3, shuffle=True, rank=1, world_size=2)
    keys = plan.keys()
    it = iter(plan)
    for j, s in enumerate(it):
        assert s.key == keys[j] == f"k{plan.indices(j, 1)[0]:04d}".encode()
        assert not s["image"].flags.writeable
        assert isinstance(s["image"].base, tenstore._native.KeepAlive)
        assert it.items == j + 1
        assert it.consumed == min(2 * (j + 1), plan.end)
    assert plan.keys(3, 2) == keys[3:5] and plan.keys(100) == []
    del reader
    assert s["label"][0] == int(keys[-1][1:])  # the array keeps its snapshot


def test_bad_plans_raise_value_error(store):
    reader = tenstore.Store(store, readonly=True).reader()
    for kw in [dict(rank=2, world_size=2), dict(world_size=0), dict(worker=3, num_workers=3),
               dict(shuffle="blocks:0"), dict(shuffle="sorted"), dict(uneven="even"),
               dict(batch_size=0), dict(state={"samples": 99, "seed": 0, "epoch": 0,
                                              "shuffle": "none", "consumed": 0}),
               dict(state={"seed": 0})]:
        with pytest.raises(ValueError):
            reader.plan(**kw)
    with pytest.raises(TypeError):
        reader.plan(shuffle=3)


def test_resume_with_another_world_size(store):
    """Ranks stop mid-epoch; the job resumes with another world size and
    worker count: nothing is repeated, nothing skipped."""
    n, seed = 23, 9
    received = []
    states = []
    for rank in range(3):
        ds = IterableDataset(store, seed=seed, shuffle="blocks:2", rank=rank, world_size=3)
        it = iter(ds)
        received += [int(next(it)["label"][0]) for _ in range(4)]
        states.append(ds.state_dict())
        it.close()
    assert all(s == states[0] for s in states)
    assert states[0]["consumed"] == 12 and states[0]["samples"] == n
    rest = []
    for rank in range(2):
        for w in range(3):
            ds = IterableDataset(store, seed=0, shuffle=None, rank=rank, world_size=2,
                                 worker=w, num_workers=3)
            ds.load_state_dict(pickle.loads(pickle.dumps(states[0])))
            assert (ds.seed, ds.shuffle) == (seed, "blocks:2")
            rest += labels(ds)
    order = epoch_order(store, seed=seed, shuffle="blocks:2")
    # What the first job received is the order's first 12, what the second
    # gets is the rest (drop_last: one sample of 11 left over for 2 ranks).
    assert sorted(received) == sorted(order[:12])
    assert sorted(rest) == sorted(order[12:22])
    assert len(set(received + rest)) == 22


def test_state_dict_counts_and_epochs(store):
    ds = IterableDataset(store, seed=4, shuffle="full")
    assert ds.state_dict() == {"samples": 23, "seed": 4, "epoch": 0, "shuffle": "full", "consumed": 0}
    assert ds.state_dict(samples=5)["consumed"] == 5
    first = labels(ds)
    assert ds.state_dict()["consumed"] == 23
    ds.load_state_dict(dict(ds.state_dict(samples=10)))
    ds.set_epoch(0)  # the loaded state's epoch: kept
    assert labels(ds) == first[10:]
    ds.set_epoch(1)  # another epoch starts from its beginning
    second = labels(ds)
    assert sorted(second) == list(range(23)) and second != first
    with pytest.raises(ValueError):
        ds.load_state_dict({"samples": 23})
    ds.load_state_dict({"samples": 24, "seed": 4, "epoch": 0, "shuffle": "full", "consumed": 3})
    with pytest.raises(ValueError, match="24"):
        next(iter(ds))


def test_torch_distributed_rank(store, monkeypatch):
    dist = pytest.importorskip("torch.distributed")
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 2)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    ds = IterableDataset(store, seed=1)
    plan = ds.plan()
    assert (plan.config()["rank"], plan.config()["world_size"]) == (2, 4)
    assert labels(ds) == labels(plan)
    explicit = IterableDataset(store, seed=1, rank=0, world_size=1)
    assert explicit.plan().config()["world_size"] == 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_follow_the_plan(store, method):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    order = epoch_order(store, seed=3, shuffle="blocks:2")
    ds = IterableDataset(store, seed=3, shuffle="blocks:2", batch_size=4)
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=method)
    got = torch.cat([b["label"][:, 0] for b in loader]).tolist()
    # Exactly once each, and in plan order (workers take turns by batch).
    assert got == order
    # Resume after 2 batches, as a checkpoint taken then would.
    state = ds.state_dict(samples=8)
    assert state["consumed"] == 8
    again = IterableDataset(store, seed=0, batch_size=4)
    again.load_state_dict(state)
    loader = DataLoader(again, batch_size=4, num_workers=2, multiprocessing_context=method)
    rest = torch.cat([b["label"][:, 0] for b in loader]).tolist()
    assert rest == order[8:]
