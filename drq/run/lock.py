"""One writer per run dir: an exclusive ``flock`` on ``<run_dir>/.lock`` held for a trainer's lifetime.

Two runs of a sweep pointed at the same dir (a resubmitted SLURM job while the first still runs, the same
``hydra.run.dir`` typed twice) would both append to the logs and replace each other's snapshot. The second one stops
with :class:`RunDirLocked` before it reads or writes anything. The kernel drops the lock when its holder exits in any
way (kill -9 included), so a stale lock file never blocks a resume. Not on Windows (no ``fcntl``): no lock there.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCK_NAME = ".lock"


class RunDirLocked(RuntimeError):
    """Another live process holds the run dir."""


class Lock:
    """A held lock (``release()`` is idempotent)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def acquire(run_dir: str | Path) -> Lock:
    """Lock ``run_dir`` (created if missing) or raise :class:`RunDirLocked` naming the holder's pid."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover -- Windows
        return Lock(None)
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirLocked(f"{run_dir} is in use by another run (pid {holder}); two runs must not share a run dir: "
                           "wait for it, or give this one another hydra.run.dir / hydra.sweep.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Lock(fd)
