"""How much memory this process may use, read before a run starts (the config checks and ``replay_storage=auto``).

``usable_ram_bytes()``, in order:

1. ``DRQ_MEMORY_LIMIT`` if set (bytes, or with a suffix: ``8G``, ``512M``, ``1.5T``; powers of 1024). Tests use it to
   make a machine look small; a user can use it to keep headroom for other work.
2. The cgroup limit of this process (v2 ``memory.max``, else v1 ``memory.limit_in_bytes``) minus what the cgroup
   already uses, if a limit is set and it is below ``MemAvailable``.
3. ``MemAvailable`` from ``/proc/meminfo`` (what the kernel can hand out without swapping, page cache included).

Returns None where none of these can be read (not Linux): the checks then trust the user.

``usable_disk_bytes(place, is_run_dir)``: what a run may write under its run dir: ``DRQ_DISK_LIMIT`` if set (same
forms), else the file system's free space plus what a session there frees or reuses (:func:`reclaimable_bytes`).

``usable_gpu_bytes(device)``: free memory on a CUDA device (``torch.cuda.mem_get_info``), or None without CUDA.
``usable_cores()``: the CPU cores this process may run on (the one count the trainer, the checks and the launcher checks
use). No torch import at module level: the config checks run before torch is loaded.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

__all__ = ["ENV_LIMIT", "ENV_DISK_LIMIT", "LIMIT_VARIABLES", "parse_size", "format_size", "meminfo", "usable_cores",
           "usable_ram_bytes", "usable_disk_bytes", "usable_gpu_bytes"]  # fmt: skip

ENV_LIMIT = "DRQ_MEMORY_LIMIT"
ENV_DISK_LIMIT = "DRQ_DISK_LIMIT"  # the disk a run may fill in its run dir, instead of its file system's free space
LIMIT_VARIABLES = {ENV_LIMIT: "the RAM a run may use", ENV_DISK_LIMIT: "the disk a run may fill"}
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str, name: str = ENV_LIMIT) -> int:
    """``"8G"`` -> 8 * 2**30; ``"123"`` -> 123. Raises ValueError naming the variable ``name`` and the forms."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not match:
        raise ValueError(f"{name}={text!r}: expected bytes or a size such as 512M, 8G, 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(nbytes: float) -> str:
    """Bytes in the largest unit that keeps the number >= 1: ``21.2 GB`` style (powers of 1000, as users read)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (``{"MemTotal": ..., "MemAvailable": ..., ...}``); empty where it cannot be read."""
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's cgroup, or None where no limit is set or readable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # cgroup v2
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit_file, usage_file = base / "memory.max", base / "memory.current"
        elif "memory" in controllers.split(","):  # cgroup v1
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file, usage_file = base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"
        else:
            continue
        try:
            limit_text = limit_file.read_text().strip()
            if limit_text == "max":
                return None
            limit = int(limit_text)
            if limit >= 2**60:  # v1's "unlimited"
                return None
            usage = int(usage_file.read_text().strip()) if usage_file.exists() else 0
        except (OSError, ValueError):
            continue
        return max(0, limit - usage)
    return None


def usable_ram_bytes() -> int | None:
    """Bytes of RAM this process may still use (see the module docstring for the order of sources)."""
    override = os.environ.get(ENV_LIMIT)
    if override:
        return parse_size(override)
    available = meminfo().get("MemAvailable")
    headroom = _cgroup_headroom()
    if headroom is not None and (available is None or headroom < available):
        return headroom
    return available


def _allocated(path: Path) -> int:
    """Bytes ``path`` takes on disk (its allocated blocks: a sparse file counts what was written), 0 if gone."""
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def usable_disk_bytes(place: str | Path, is_run_dir: bool = False) -> int | None:
    """Bytes a run may still write at ``place`` (an existing folder), or None where that cannot be read.

    ``DRQ_DISK_LIMIT`` if set; else the free space of ``place``'s file system, plus, where ``place`` is the run dir
    itself (``is_run_dir``: a resumed run, or a sweep dir whose jobs resume), what a session frees or reuses there, in
    it or in its job folders (:func:`reclaimable_bytes`)."""
    override = os.environ.get(ENV_DISK_LIMIT)
    if override:
        return parse_size(override, ENV_DISK_LIMIT)
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return None
    if not is_run_dir:
        return free
    place = Path(place)
    return free + sum(reclaimable_bytes(run_dir) for run_dir in (place, *place.glob("*/")))  # a sweep dir's jobs


def reclaimable_bytes(run_dir: Path) -> int:
    """Bytes of ``run_dir``'s files that a session there frees or reuses: ``snapshot.pt`` (replaced), the replay
    folder's frames file (replaced, or deleted with RAM storage) and what a killed session left there (deleted at
    the start), and its segment files (the resume reuses those its snapshot names; the rest go), except those a copy
    of the snapshot kept beside it names (they stay while it does; one that cannot be read keeps them all)."""
    from replay.segment_names import SEGMENT_NAME, names_in_snapshot  # no torch

    kept: set[str] | None = set()
    for copy in run_dir.glob("*.pt"):
        if copy.name != "snapshot.pt" and kept is not None:
            named = names_in_snapshot(copy)
            kept = None if named is None else kept | named
    replay = run_dir / "replay"
    files = [p for p in replay.iterdir() if p.is_file()] if replay.is_dir() else []
    return _allocated(run_dir / "snapshot.pt") + sum(
        _allocated(p) for p in files if not SEGMENT_NAME.fullmatch(p.name) or (kept is not None and p.name not in kept))


def usable_gpu_bytes(device: str = "cuda") -> int | None:
    """Free bytes on the CUDA device ``device`` (``cuda``, ``cuda:1``), or None where CUDA is not available."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)
