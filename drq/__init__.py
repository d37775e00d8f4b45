"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap and touches no GL backend.

Importing ``drq`` (or ``replay``) before torch allocates anything asks torch's CPU allocator to back large tensors
with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, a documented torch setting; set it to 0 to opt out): every
update allocates tens of MB of activations, and without huge pages the page faults cost ~1.6x in update time on a
2-core CPU (measured with bench/update.py). It also sets ``OMP_WAIT_POLICY=PASSIVE``: with the environment worker
(or anything else) on the same cores, spinning OpenMP threads wait for a preempted peer and updates slowed 2-10x on
this 2-core machine; passive waiting removes most of that. Both are ``setdefault``: a value you export wins.

On Linux with glibc it also keeps freed memory for reuse (``mallopt``: no ``mmap`` per large block, trim only above
1 GiB): glibc otherwise maps every block over 32 MB afresh and unmaps it on free, so each update page-faulted and
zeroed its ~1 GB of activations again; keeping them made both our update and the plain baseline ~1.4x faster on the
AVX2 machine (docs/benchmarks.md). ``DRQ_MALLOC=default`` (exported before the import) leaves glibc as it is.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> bool:
    """glibc ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``; False where not applied."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("DRQ_MALLOC", "keep") == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


MALLOC_TUNED = _keep_freed_memory()

__version__ = "0.1.0"
