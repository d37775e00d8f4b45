"""Snapshots: one ``snapshot.pt`` of state dicts and plain values, loadable with ``torch.load(weights_only=True)``.

Contents (see :func:`drq.run.resume.snapshot_state`): ``format``, ``config`` (the resolved run config as plain
containers), ``agent`` (networks, optimisers, log alpha), ``replay`` (optional), ``counters`` (frames, agent steps,
episodes), ``rng`` (python / numpy / torch states as tensors and ints), ``logger`` (lines per log file),
``wandb_run_id``, ``provenance`` (run.json's sessions: what each session ran on, :mod:`drq.run.provenance`), ``env``
(what a deployment needs: the task, the observation's layout, the action repeat and bounds,
:func:`drq.run.provenance.env_record`; snapshots from before it lack it).
``replay`` is the manifest of the segment files in ``RUN_DIR/replay`` (:mod:`replay.segments`); snapshots from before
issue 22 held the whole replay there, and still load.

Writing is atomic: a temporary file in the same folder, ``fsync``, then ``os.replace`` over the old snapshot and an
``fsync`` of the folder, so an interrupted or failed write (disk full, an I/O error on the folder) leaves the
previous snapshot intact or, where only the folder's fsync failed, either snapshot; a failed write warns and returns
False. Loading turns every way a file can be unusable into one :class:`SnapshotError` naming the file and the problem.

A run dir may hold copies of ``snapshot.pt`` kept beside it (``cp snapshot.pt snap_500k.pt``: any ``*.pt`` there
whose first bytes say it is a snapshot): :class:`SnapshotsHere` reads what each one names, so that the replay's
segment files they need are kept while they exist (docs/snapshots.md).
"""

from __future__ import annotations

import errno
import os
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from replay.segments import fsync_dir

FORMAT = "drq-snapshot-v1"
FILENAME = "snapshot.pt"


class SnapshotError(RuntimeError):
    """A snapshot that cannot be used: missing, unreadable, corrupt, or made by an incompatible run."""


class RunDirError(RuntimeError):
    """A file the run keeps in its run dir (a log, a replay segment, the frames file) could not be read, written or
    deleted; ``str(error)`` is one line naming the path and the cause. Raised where the snapshot on disk is whole."""

    @classmethod
    def of(cls, doing: str, error: OSError, path: str | Path | None = None) -> RunDirError:
        """``could not <doing> <path> (<cause>)``; ``path``: where ``error`` names none (a failed ``write``)."""
        where = error.filename if error.filename is not None else path
        return cls(f"could not {doing} {where} ({error.strerror or error})")


def save(path: str | Path, state: dict[str, Any]) -> bool:
    """Write ``state`` to ``path`` atomically. Returns False (after a warning) on an OS error such as disk full."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # an OSError here is a failed save (the rename may not survive)
        return True
    except (OSError, RuntimeError) as error:
        cause = _os_error_in(error)
        if cause is None:  # not a file system failure: a bug, let it be seen
            raise
        try:
            tmp.unlink()
        except OSError:
            pass
        warn_not_written(path, cause)
        return False


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error``: itself, or the one it was raised while handling. torch.save on a full disk raises
    ENOSPC inside its zip writer, whose clean-up then fails with a RuntimeError ('unexpected pos ...') that replaces
    it (seen on a full tmpfs: the snapshot test's traceback)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def warn_not_written(path: Path, error: OSError) -> None:
    """The one warning for a snapshot (or its replay segments) that could not be written: training goes on."""
    reason = "disk full" if error.errno == errno.ENOSPC else str(error)
    kept = "the previous snapshot is kept" if path.exists() else "there is no snapshot yet"
    warnings.warn(f"could not write snapshot {path} ({reason}); {kept} and training goes on", RuntimeWarning,
                  stacklevel=3)  # fmt: skip


class SnapshotsHere:
    """The snapshots of one run dir, for deciding which replay segment files are still needed: ``snapshot.pt`` and
    every copy kept beside it (a ``*.pt`` file directly in the run dir whose first bytes say it is a snapshot, so a copy
    still being written counts), each read once while it is unchanged; and the last ``snapshot.pt`` this session knows
    to be durable (after a save whose folder fsync failed, a crash may leave either the new one or that one): the
    one on disk at the first :meth:`named`, at the session's start, then each one :meth:`saved` says was written.

    ``names_of``: the segment files a snapshot's ``replay`` entry names (``replay.segments.ReplayFiles.names``)."""

    def __init__(self, run_dir: str | Path, names_of: Callable[[Any], Iterable[str]]) -> None:
        self.run_dir, self._names_of = Path(run_dir), names_of
        self._read: dict[Path, tuple[tuple[int, int, int], frozenset[str]]] = {}  # path -> (inode, size, mtime), names
        self._durable: frozenset[str] | None = None  # named by the last snapshot.pt known durable (None: not read yet)

    def named(self) -> set[str]:
        """The segment files every snapshot here names, and the last one known durable. Raises
        :class:`SnapshotError` naming a snapshot that cannot be read (a copy still being written): it may name
        anything, so nothing may be deleted while it is there."""
        named, read = set(self._durable or ()), {}
        for path in snapshots_in(self.run_dir):
            try:
                info = path.stat()
            except FileNotFoundError:  # deleted since the listing: it names nothing any more
                continue
            key = (info.st_ino, info.st_size, info.st_mtime_ns)
            names = self._read[path][1] if path in self._read and self._read[path][0] == key else None
            if names is None:  # mmap: the tensors are not read; the names are copied out, the file let go
                try:
                    names = frozenset(self._names_of(load(path, mmap=True).get("replay")))
                except SnapshotError:
                    raise SnapshotError(f"{path} looks like a snapshot but cannot be read (a copy still being "
                                        "written?)") from None
            read[path] = (key, names)
            named |= names
            if self._durable is None and path.name == FILENAME:  # the first read (snapshot.pt comes first), at the
                self._durable = names  # session's start, before any save: the snapshot it started from
        self._read = read
        return named

    def saved(self, replay: Any) -> None:
        """``snapshot.pt`` was just written and made durable with the replay entry ``replay``."""
        path = self.run_dir / FILENAME
        info = path.stat()
        self._durable = frozenset(self._names_of(replay))
        self._read[path] = ((info.st_ino, info.st_size, info.st_mtime_ns), self._durable)


def snapshots_in(run_dir: str | Path) -> list[Path]:
    """The snapshots of ``run_dir``: ``snapshot.pt`` first (if there), then the copies kept beside it, by name."""
    return sorted((p for p in Path(run_dir).glob("*.pt") if p.name == FILENAME or _looks_like_snapshot(p)),
                  key=lambda p: (p.name != FILENAME, p.name))  # fmt: skip


def _looks_like_snapshot(path: Path) -> bool:
    """Whether ``path``'s first bytes hold :data:`FORMAT` (a snapshot's pickle begins with it, even half-copied)."""
    try:
        with open(path, "rb") as f:
            return FORMAT.encode() in f.read(4096)
    except OSError:
        return False


def resolve_path(path: str | Path) -> Path:
    """A run dir -> its ``snapshot.pt``; a file path stays as it is."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def load(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read a snapshot with ``torch.load(weights_only=True)`` (on the CPU); raise :class:`SnapshotError` if unusable.

    ``mmap``: map the tensors' storage instead of reading it (cheap when only the plain values, e.g. the config, are
    wanted)."""
    path = resolve_path(path)
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 -- any unpickling failure means the file is unusable
        raise SnapshotError(
            f"snapshot {path} is corrupt or not a drq snapshot: torch.load(weights_only=True) failed with "
            f"{type(error).__name__}; nothing was overwritten (move it away or pass resume=never to start afresh)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise SnapshotError(f"snapshot {path} has format {found!r}, expected {FORMAT!r} (made by another drq version?)")
    return state


def check_compatible(state: dict[str, Any], config: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    """Raise :class:`SnapshotError` if ``state['config']`` differs from ``config`` in any of ``keys``."""
    saved = state.get("config", {})
    diff = [f"{k}: snapshot {_get(saved, k)!r}, now {_get(config, k)!r}" for k in keys if _get(saved, k) != _get(config, k)]
    if diff:
        raise SnapshotError(f"snapshot {path} was made by an incompatible run ({'; '.join(diff)})")


def _get(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# --------------------------------------------------------------------------------------------------------- RNGs
def capture_rng() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch RNG states as tensors and plain values (weights_only-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
