"""Datasets over a store for data loaders (torch optional).

``Dataset(path)`` is map-style: ``len(ds)`` and ``ds[i]`` (a dict name ->
array) by index over the snapshot's keys in key order. ``IterableDataset``
follows an epoch plan (``tenstore.Plan``): an order fixed by ``seed``, the
epoch and ``shuffle``, split between ranks (``torch.distributed`` or
explicit) and loader workers with equal counts per rank, resumable
mid-epoch through ``state_dict``/``load_state_dict`` for any world size.

Both open the store lazily, in the process that reads, and pickle as their
path and options, so they work with ``fork`` and ``spawn`` workers. The
path may be a published store's URL (``s3://bucket/prefix``,
``file:///dir``), read through the local cache that ``cache_dir`` and
``cache_size`` set (as for ``tenstore.Store``).
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
    default collate copies them into tensors). An epoch reads every sample,
    so each is checked as a scan is: a damaged shard record raises
    ``FormatError`` instead of reaching the model."""

    def __init__(self, path, copy=False, cache_dir=None, cache_size=None):
        self.path = str(path)
        self.copy = copy
        self.cache_dir, self.cache_size = _cache_args(self.path, cache_dir, cache_size)
        self._reader = None
        self._keys = None

    def _open(self):
        if self._reader is None:
            self._reader = _open_store(self).reader()
            self._keys = self._reader.keys()
        return self._reader

    def __len__(self):
        self._open()
        return len(self._keys)

    def __getitem__(self, i):
        reader = self._open()
        key = self._keys[i]
        sample = reader.get(key, verify=True)
        if sample is None:
            raise KeyError(key)
        return _as_dict(sample, self.copy)

    def key(self, i):
        """The key of sample ``i``."""
        self._open()
        return self._keys[i]

    def __getstate__(self):
        return {
            "path": self.path,
            "copy": self.copy,
            "cache_dir": self.cache_dir,
            "cache_size": self.cache_size,
        }

    def __setstate__(self, state):
        self.__init__(
            state["path"],
            copy=state["copy"],
            cache_dir=state.get("cache_dir"),
            cache_size=state.get("cache_size"),
        )


def _cache_args(path, cache_dir, cache_size):
    """``(cache_dir, cache_size)`` checked here, where the dataset is made,
    rather than in each loader worker: as ``Store`` takes them (the
    directory absolute, the size in bytes)."""
    if cache_dir is None and cache_size is None:
        return None, None
    d, size = Store._check_cache(path, cache_dir=cache_dir, cache_size=cache_size)
    return (None if d is None else str(d)), size


def _open_store(ds):
    """The store a dataset reads, read-only; cache options only for URLs
    (a local store refuses them)."""
    cache = {}
    if ds.cache_dir is not None:
        cache["cache_dir"] = ds.cache_dir
    if ds.cache_size is not None:
        cache["cache_size"] = ds.cache_size
    return Store(ds.path, readonly=True, **cache)


class IterableDataset(_IterBase):
    """Every sample once per epoch, in the order of an epoch plan
    (``tenstore.Plan``), split across ranks and loader workers.

    - **Order**: fixed by ``seed``, the epoch (``set_epoch``) and
      ``shuffle``: ``None``/``False``/``"none"`` (storage order: key order
      for LMDB, write order for shard stores), ``True``/``"full"`` (a seeded
      permutation of the epoch) or ``"blocks:N"`` (storage order cut into
      blocks of N samples, blocks permuted and samples mixed across a few
      blocks: long sequential reads, mixed batches).
    - **Ranks**: ``rank``/``world_size`` when given, else
      ``torch.distributed``'s when it is initialized, else 0 of 1. Rank r of
      W takes global positions r, r+W, ...; ``uneven="drop_last"`` gives
      every rank ``n // W`` samples, ``"pad"`` ``ceil(n / W)`` (the last
      positions wrap to the start of the order).
    - **Workers**: ``torch.utils.data.get_worker_info()`` inside a torch
      loader worker, else ``worker``/``num_workers`` (default 0 of 1). The
      workers of a rank take its samples in turns of ``batch_size``: pass
      the ``DataLoader``'s ``batch_size`` and the loader (which takes one
      batch from each worker in turn) hands the rank's samples out in plan
      order.
    - **Resuming**: ``state_dict()`` is the plan state (``samples``,
      ``seed``, ``epoch``, ``shuffle``, ``consumed``: the global positions
      ``0..consumed`` of the epoch's order are used);
      ``load_state_dict(d)`` makes the next iteration start right after
      them, for any world size and worker count.

    Samples are dicts name -> array (read-only views over the store's
    mapped pages unless ``copy=True``; ``with_key=True`` adds
    ``"__key__"``).
    """

    def __init__(
        self,
        path,
        seed=0,
        shuffle=True,
        rank=None,
        world_size=None,
        worker=None,
        num_workers=None,
        epoch=0,
        copy=False,
        with_key=False,
        uneven="drop_last",
        batch_size=1,
        cache_dir=None,
        cache_size=None,
    ):
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if uneven not in ("drop_last", "drop-last", "pad"):
            raise ValueError(f"uneven is \"drop_last\" or \"pad\", not {uneven!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.path = str(path)
        self.seed = int(seed)
        self.shuffle = _shuffle_name(shuffle)
        self.rank = rank
        self.world_size = world_size
        self.worker = worker
        self.num_workers = num_workers
        self.epoch = int(epoch)
        self.copy = copy
        self.with_key = with_key
        self.uneven = uneven
        self.batch_size = int(batch_size)
        self.cache_dir, self.cache_size = _cache_args(self.path, cache_dir, cache_size)
        self._resume = None  # a loaded state of self.epoch
        self._plan = None  # the plan being iterated in this process
        self._yielded = 0  # samples it handed out
        self._last = None  # state at the end of the last iteration here

    def set_epoch(self, epoch):
        """The epoch whose order the next iteration follows. A state loaded
        by ``load_state_dict`` is kept only for its own epoch."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._resume = None
            self._last = None
        self.epoch = epoch

    def _rank_world(self):
        if self.rank is not None:
            return self.rank, self.world_size
        if _tud is not None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _worker_split(self):
        worker, num_workers = self.worker, self.num_workers
        if _tud is not None:
            info = _tud.get_worker_info()
            if info is not None:
                worker, num_workers = info.id, info.num_workers
        if worker is None:
            worker, num_workers = 0, 1
        if num_workers is None or not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} is not in [0, num_workers={num_workers})")
        return worker, num_workers

    def plan(self, worker=None, num_workers=None):
        """The ``tenstore.Plan`` the next iteration follows (this process's
        rank; ``worker``/``num_workers`` default as in iteration)."""
        rank, world = self._rank_world()
        if worker is None:
            worker, num_workers = self._worker_split()
        reader = _open_store(self).reader()
        return reader.plan(
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            rank=rank,
            world_size=world,
            worker=worker,
            num_workers=num_workers,
            uneven=self.uneven,
            batch_size=self.batch_size,
            state=self._resume,
        )

    def __iter__(self):
        plan = self.plan()
        self._plan, self._yielded, self._last = plan, 0, None
        try:
            for sample in plan:
                out = _as_dict(sample, self.copy)
                if self.with_key:
                    out["__key__"] = sample.key
                self._yielded += 1
                yield out
        finally:
            if self._plan is plan:
                self._last = plan.state(plan.consumed_after(self._yielded))
                self._plan = None

    def state_dict(self, samples=None):
        """The progress through the current epoch, as a dict: ``samples``
        (the store's sample count), ``seed``, ``epoch``, ``shuffle`` and
        ``consumed`` (global positions of the epoch's order used), the
        JSON fields of the Rust ``PlanState``.

        ``samples``: how many samples this rank has received in the current
        iteration (from its start or from the loaded state). Pass it when a
        ``DataLoader`` with workers iterates this dataset (the workers'
        progress is not visible in this process) and set ``batch_size`` to
        the loader's. Without it, the count of samples this object's own
        iteration in this process handed out (0 if it has not iterated
        here). Every rank of a synchronous job has received as many, so
        every rank's state is the same; save one.
        """
        if samples is None:
            if self._plan is not None:
                return self._plan.state(self._plan.consumed_after(self._yielded))
            if self._last is not None:
                return dict(self._last)
            samples = 0
        samples = int(samples)
        if samples < 0:
            raise ValueError(f"samples must not be negative, not {samples}")
        plan = self._plan
        if plan is None:
            plan = self.plan(worker=0, num_workers=1)
        return plan.state(plan.consumed_after(samples))

    def load_state_dict(self, state):
        """Resumes from ``state`` (a ``state_dict()``): the next iteration
        follows its seed, epoch and shuffle and starts right after its
        ``consumed`` positions, with this dataset's world size and workers
        (any). Iterating over a store whose sample count differs from the
        state's raises ``ValueError`` (the order would differ)."""
        missing = [k for k in ("samples", "seed", "epoch", "shuffle", "consumed") if k not in state]
        if missing:
            raise ValueError(f"not a plan state: it lacks {', '.join(missing)}")
        state = {k: state[k] for k in ("samples", "seed", "epoch", "shuffle", "consumed")}
        for k in ("samples", "seed", "epoch", "consumed"):
            if not isinstance(state[k], int) or state[k] < 0:
                raise ValueError(f"plan state field {k} must be a non-negative int, not {state[k]!r}")
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.shuffle = _shuffle_name(state["shuffle"])
        self._resume = state
        self._plan, self._last = None, None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plan"], state["_yielded"], state["_last"] = None, 0, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


def _shuffle_name(shuffle):
    """``"none"``, ``"full"`` or ``"blocks:N"``."""
    if shuffle is None or shuffle is False:
        return "none"
    if shuffle is True:
        return "full"
    if isinstance(shuffle, str):
        if shuffle in ("none", "full"):
            return shuffle
        if shuffle.startswith("blocks:"):
            n = shuffle[len("blocks:"):]
            if n.isdigit() and int(n) >= 1:
                return f"blocks:{int(n)}"
    raise ValueError(f"unknown shuffle {shuffle!r}: None, True, \"none\", \"full\" or \"blocks:N\" (N >= 1)")
