"""Datasets over a store for data loaders (torch optional).

``Dataset(path)`` is map-style: ``len(ds)`` and ``ds[i]`` (a dict name ->
array) by index over the snapshot's keys in key order. ``IterableDataset``
yields every sample once per epoch in an order fixed by ``seed`` and the
epoch (``set_epoch``), split between ranks and loader workers by striding:
position ``p`` of the epoch's order goes to worker ``p % total``.

Both open the store lazily, in the process that reads, and pickle as their
path and options, so they work with ``fork`` and ``spawn`` workers.
"""

import numpy as np

from ._native import Store

try:  # torch is optional: the datasets subclass its types when it is there
    import torch.utils.data as _tud

    _MapBase = _tud.Dataset
    _IterBase = _tud.IterableDataset
except ImportError:  # pragma: no cover - exercised where torch is absent
    _tud = None
    _MapBase = object
    _IterBase = object

__all__ = ["Dataset", "IterableDataset"]


def _as_dict(sample, copy):
    if copy:
        return {n: np.array(a) for n, a in sample.items()}
    return dict(sample.items())


class Dataset(_MapBase):
    """Map-style dataset: ``ds[i]`` is the ``i``-th sample in key order as a
    dict name -> array (read-only views unless ``copy=True``; torch's
    default collate copies them into tensors)."""

    def __init__(self, path, copy=False):
        self.path = str(path)
        self.copy = copy
        self._reader = None
        self._keys = None

    def _open(self):
        if self._reader is None:
            self._reader = Store(self.path, readonly=True).reader()
            self._keys = self._reader.keys()
        return self._reader

    def __len__(self):
        self._open()
        return len(self._keys)

    def __getitem__(self, i):
        reader = self._open()
        return _as_dict(reader[self._keys[i]], self.copy)

    def key(self, i):
        """The key of sample ``i``."""
        self._open()
        return self._keys[i]

    def __getstate__(self):
        return {"path": self.path, "copy": self.copy}

    def __setstate__(self, state):
        self.__init__(state["path"], copy=state["copy"])


class IterableDataset(_IterBase):
    """Every sample once per epoch, split across ranks and workers.

    The split comes from ``torch.utils.data.get_worker_info()`` inside a
    torch loader worker, else from ``worker``/``num_workers``; ``rank`` and
    ``world_size`` split between processes of a distributed job.
    """

    def __init__(
        self,
        path,
        seed=0,
        shuffle=True,
        rank=0,
        world_size=1,
        worker=None,
        num_workers=None,
        epoch=0,
        copy=False,
        with_key=False,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.path = str(path)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.worker = worker
        self.num_workers = num_workers
        self.epoch = epoch
        self.copy = copy
        self.with_key = with_key

    def set_epoch(self, epoch):
        """The epoch whose order the next iteration follows."""
        self.epoch = epoch

    def _split(self):
        worker, num_workers = self.worker, self.num_workers
        if _tud is not None:
            info = _tud.get_worker_info()
            if info is not None:
                worker, num_workers = info.id, info.num_workers
        if worker is None:
            worker, num_workers = 0, 1
        if num_workers is None or not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} is not in [0, num_workers={num_workers})")
        return self.rank * num_workers + worker, self.world_size * num_workers

    def __iter__(self):
        part, parts = self._split()
        reader = Store(self.path, readonly=True).reader()
        if self.shuffle:
            # A permutation fixed by (seed, epoch).
            keys = reader.ordered_keys("shuffle", (self.seed * 1_000_003 + self.epoch) & (2**64 - 1))
        else:
            keys = reader.keys()
        for key in keys[part::parts]:
            sample = _as_dict(reader[key], self.copy)
            if self.with_key:
                sample["__key__"] = key
            yield sample
