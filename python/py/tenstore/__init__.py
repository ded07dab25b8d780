"""tenstore: tensors in webdataset's tenbin format, in Python.

- ``tenstore.tenbin``: a drop-in for ``webdataset.tenbin`` that decodes
  without copying (read-only numpy views) and is strict on malformed input.
- ``tenstore.Store`` / ``Reader`` / ``Sample``: LMDB and ``.ten`` shard
  stores, read as numpy views over the mapped pages.
- ``tenstore.Plan`` (``Reader.plan``): an epoch plan, one rank's and
  worker's part of a seeded, resumable epoch order.
- ``tenstore.data``: map-style and iterable datasets for loaders (torch
  optional).
"""

import collections.abc as _abc
import os as _os

from . import _native
from ._native import FormatError, Plan, Reader, Sample, Store, StoreError

_abc.Mapping.register(Sample)

# LMDB environments and transactions must never be used across a fork: a
# child releases what it inherited (without ending the parent's snapshots)
# and reopens stores by path on first use.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_native._after_fork)

from . import tenbin  # noqa: E402

__all__ = ["FormatError", "Plan", "Reader", "Sample", "Store", "StoreError", "tenbin"]
__version__ = "0.1.0"
