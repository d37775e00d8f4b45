"""Process-wide speed settings, applied by the entry points only (``train.py``, ``python -m drq.evaluate``, the
benches and the test session): ``import drq`` changes nothing, so a notebook that imports the library keeps its
allocator and its OpenMP runtime as they were.

:func:`tune_process` must run before torch is imported (OpenMP reads its settings when torch's library loads, and
torch's CPU allocator reads its own at the first allocation). It sets, each with ``setdefault`` (a value you export
wins):

- ``THP_MEM_ALLOC_ENABLE=1``, a documented torch setting (set it to 0 to opt out): torch's CPU allocator backs large
  tensors with transparent huge pages. Every update allocates tens of MB of activations, and without huge pages the
  page faults cost ~1.6x in update time on a 2-core CPU (measured with bench/update.py).
- ``OMP_WAIT_POLICY=PASSIVE``: with the environment worker (or anything else) on the same cores, spinning OpenMP
  threads wait for a preempted peer and updates slowed 2-10x on this 2-core machine; passive waiting removes most of
  that.

On Linux with glibc it also keeps freed memory for reuse (``mallopt``: no ``mmap`` per large block, trim only above
1 GiB): glibc otherwise maps every block over 32 MB afresh and unmaps it on free, so each update page-faulted and
zeroed its ~1 GB of activations again; keeping them made both our update and the plain baseline ~1.4x faster on the
AVX2 machine (docs/benchmarks.md). ``DRQ_MALLOC=default`` (exported before the call) leaves glibc as it is.

The environment variables reach the env and eval worker processes too (they inherit the environment); ``mallopt``
is this process's alone.
"""

from __future__ import annotations

import os
import sys

ENVIRONMENT = {"THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
"""The variables :func:`tune_process` sets when they are unset."""

_malloc_tuned: bool | None = None  # None: tune_process has not run in this process


def tune_process() -> bool:
    """Apply the settings above to this process (call it before ``import torch``; a second call changes nothing).
    Returns whether glibc's ``malloc`` now keeps freed memory."""
    global _malloc_tuned
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if _malloc_tuned is None:
        _malloc_tuned = _keep_freed_memory()
    return _malloc_tuned


def malloc_tuned() -> bool:
    """Whether :func:`tune_process` made glibc keep freed memory in this process (False before it ran)."""
    return bool(_malloc_tuned)


def _keep_freed_memory() -> bool:
    """glibc ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``; False where not applied."""
    import ctypes

    if not sys.platform.startswith("linux") or os.environ.get("DRQ_MALLOC", "keep") == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
