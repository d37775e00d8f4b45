"""The replay on disk: append-only segment files under ``RUN_DIR/replay/``, each time step written once.

Why: a snapshot that holds the whole replay rewrites 21 GB (1M transitions at 84x84) every ``snapshot_every_frames``
and needs twice the buffer in RAM while it does (issue 22). Here a snapshot writes only the steps added since the
previous one; ``snapshot.pt`` holds a small manifest naming the segments instead of the frames.

Layout. Logical indices (time steps, as in :mod:`replay.buffer`) are cut on a fixed grid of ``segment_steps`` (1000
steps: 21 MB of frames at 84x84). A segment file holds the steps ``[first, stop)`` of one grid cell: ``first`` then
frames, action, reward, discount, t, last, as consecutive ``.npy`` records (``np.save`` one after another into one
file, read back with ``np.load`` from the same file object: no zip, ~9x faster to read than ``.npz``). It is named
``seg-<cell start>-<stop>-<digest>.npys`` (:mod:`replay.segment_names`), the digest a CRC-32 of ``first`` and the
fields' CRC-32s: two timelines that wrote the same cell up to the same stop with other contents (a resume from an older
snapshot, another setting) write two files, and a file is never written over. A snapshot at step count ``T`` refers
to the cells that overlap the held window ``[lo, T)``, ``lo = max(0, T - num_slots)``: full cells once complete, the
newest cell as ``[cell start, T)`` (written again under a new name at each snapshot until it is full: at most
``segment_steps`` steps rewritten per snapshot). A cell whose beginning was evicted before it was first written starts
at ``lo``. The manifest records each file's name and, for each cell, the steps still held (``start = max(first,
lo)``, ``stop``) and the CRC-32 of those steps' fields, so a resume checks every step, and the same run snapshotted at
other moments ends with the same manifest (the preemption tests compare them) as long as no cell's beginning was
evicted before its first write (then its file starts later, and its digest differs).

Crash safety (kill -9 at any moment): a segment is written to a hidden temporary name, fsynced, then renamed; the
folder is fsynced before ``snapshot.pt`` is replaced; a segment is never modified after its rename. Files are deleted
only when no snapshot on disk names them (:meth:`ReplayFiles.prune`, given every snapshot in the run dir: the one
just written or still on disk, and any copy kept beside it), and at the start of the next session
(:meth:`ReplayFiles.clean`): evicted cells, the newest cell's previous versions, what a killed session wrote after
its last snapshot.

The manifest (``torch.load(weights_only=True)``-safe): ``format``, ``config`` (the buffer's), ``total``, ``rng`` (the
sampler's state), ``segment_steps``, ``files`` (the segment file names), and per segment ``start``/``stop`` (int64
tensors: the held steps) and a CRC-32 of each field over them (``crc_frames`` ... ``crc_last``), checked when a
resume reads the segment back. Manifests from before the digest (``drq-replay-segments-v1``: no ``files``, names
``seg-<cell start>-<stop>.npys``) still load.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from replay.buffer import FrameReplay
from replay.segment_names import SEGMENT_NAME, segment_name

FORMAT = "drq-replay-segments-v2"
OLD_FORMAT = "drq-replay-segments-v1"  # before the digest in the file names (issue 32): still read
SEGMENT_STEPS = 1000
FIELDS = ("frames", "action", "reward", "discount", "t", "last")

__all__ = ["FORMAT", "SEGMENT_STEPS", "FIELDS", "ReplayFiles", "cells", "is_manifest", "segment_name"]


def is_manifest(state: Any) -> bool:
    """Whether a snapshot's ``replay`` entry is a segment manifest (else: the whole replay, as before issue 22)."""
    return isinstance(state, dict) and state.get("format") in (FORMAT, OLD_FORMAT)


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def _crcs(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    return {field: _crc(arrays[field]) for field in FIELDS}


def _digest(first: int, crcs: dict[str, int]) -> int:
    """The digest in a segment file's name: CRC-32 of its first step and its fields' CRC-32s (its whole content)."""
    return zlib.crc32(np.array([first, *(crcs[field] for field in FIELDS)], dtype=np.int64).tobytes())


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable. Raises OSError (a failed save: a rename may not survive a crash)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cells(total: int, num_slots: int, segment_steps: int) -> list[tuple[int, int, int]]:
    """``(cell_start, held_start, stop)`` for each grid cell overlapping the held window ``[total - num_slots, total)``:
    the cell begins at ``cell_start``, its steps from ``held_start`` on are still held, it ends at ``stop``."""
    lo = max(0, total - num_slots)
    out = []
    for j in range(lo // segment_steps, -(-total // segment_steps)):
        cell_start = j * segment_steps
        out.append((cell_start, max(cell_start, lo), min(cell_start + segment_steps, total)))
    return out


class ReplayFiles:
    """The segment files of one run dir: what a snapshot refers to, written once each.

    ``directory``: ``RUN_DIR/replay``. ``segment_steps``: grid cell size in time steps (one frame each).
    """

    def __init__(self, directory: str | Path, segment_steps: int = SEGMENT_STEPS) -> None:
        self.directory = Path(directory)
        self.segment_steps = int(segment_steps)
        # (cell start, stop) -> the file on disk holding this replay's steps there: name, first step, CRCs
        self._written: dict[tuple[int, int], dict[str, Any]] = {}

    @property
    def frames_file(self) -> Path:
        """Where ``replay_storage=disk`` memory-maps the frames (:class:`replay.FrameReplay`'s ``frames_file``):
        scratch, never named by a snapshot (a resume rebuilds it from the segments)."""
        return self.directory / "frames.u8"

    # --------------------------------------------------------------------------------------------------- writing
    def save(self, replay: FrameReplay) -> dict[str, Any]:
        """Write the segments this replay's manifest needs and that are not on disk yet; return the manifest.

        Raises OSError (disk full, ...) with nothing referred to yet: the previous snapshot stays valid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entries = []
        wrote = False
        for cell_start, held_start, stop in cells(replay.total, replay.num_slots, self.segment_steps):
            known = self._written.get((cell_start, stop))
            if known is None:
                arrays = replay.export_range(held_start, stop)
                crcs = _crcs(arrays)
                name = segment_name(cell_start, stop, _digest(held_start, crcs))
                if not (self.directory / name).is_file():  # else: these very steps, named by a kept snapshot
                    self._write(name, arrays, held_start)
                    wrote = True
                known = self._written[(cell_start, stop)] = {"name": name, "from": held_start, **crcs}
            # the manifest's digests cover the held steps only: the oldest cell's shrink as the ring evicts
            crcs = known if known["from"] == held_start else _crcs(replay.export_range(held_start, stop))
            entries.append((held_start, stop, crcs, known["name"]))
        if wrote:
            fsync_dir(self.directory)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "config": replay.state_dict_config(),
            "total": replay.total,
            "rng": replay.rng_state(),
            "segment_steps": self.segment_steps,
            "files": [e[3] for e in entries],
            "start": torch.tensor([e[0] for e in entries], dtype=torch.int64),
            "stop": torch.tensor([e[1] for e in entries], dtype=torch.int64),
        }
        for field in FIELDS:
            manifest[f"crc_{field}"] = torch.tensor([e[2][field] for e in entries], dtype=torch.int64)
        return manifest

    def _write(self, name: str, arrays: dict[str, np.ndarray], first: int) -> None:
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.int64(first))
                for field in FIELDS:
                    np.save(f, np.ascontiguousarray(arrays[field]))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------------------------------------- housekeeping
    def prune(self, keep: Iterable[str]) -> None:
        """Delete every segment and temporary file not in ``keep``: the files every snapshot on disk names (the one
        just written or still there, the copies kept beside it: :meth:`names` of each).

        Raises OSError (its ``filename`` set) when the folder cannot be listed or a file cannot be deleted; what
        was not deleted stays, for a later prune."""
        keep = set(keep)
        if not self.directory.is_dir():
            return
        deleted = set()
        try:
            for path in sorted(self.directory.iterdir()):
                if (SEGMENT_NAME.fullmatch(path.name) and path.name not in keep) or ".tmp" in path.name:
                    path.unlink(missing_ok=True)
                    deleted.add(path.name)
        finally:  # what was deleted is forgotten, also when a later file could not be
            self._written = {cell: known for cell, known in self._written.items() if known["name"] not in deleted}

    def clean(self, manifest: dict[str, Any] | None, keep: Iterable[str] = ()) -> None:
        """At the start of a session, once its replay was read back from ``manifest`` (a snapshot of this folder;
        None: it was not): adopt the files it names (they are not written again), and delete those that neither it
        nor ``keep`` (what the other snapshots beside it name, see :meth:`prune`) names: what a killed session
        wrote after its last snapshot. Raises OSError as :meth:`prune` does."""
        self._written = {}
        if manifest is not None:
            cell = int(manifest["segment_steps"])
            for i, name in enumerate(self.names(manifest)):
                start, stop = int(manifest["start"][i]), int(manifest["stop"][i])
                self._written[(start - start % cell, stop)] = {
                    "name": name, "from": start, **{field: int(manifest[f"crc_{field}"][i]) for field in FIELDS}}
        self.prune({*self.names(manifest), *keep})

    @staticmethod
    def names(manifest: Any) -> list[str]:
        """The files a snapshot's replay entry ``manifest`` refers to, one per grid cell (before the digest: named by
        the cell and the stop); none where it is not a manifest (None, a replay from before issue 22)."""
        if not is_manifest(manifest):
            return []
        if manifest["format"] == FORMAT:
            return list(manifest["files"])
        cell = int(manifest["segment_steps"])
        return [segment_name(a - a % cell, b) for a, b in zip(manifest["start"].tolist(), manifest["stop"].tolist())]

    # --------------------------------------------------------------------------------------------------- reading
    @staticmethod
    def load(replay: FrameReplay, manifest: dict[str, Any], directory: str | Path) -> None:
        """Fill ``replay`` from the segments in ``directory`` named by ``manifest`` (one segment in memory at a time).

        Raises ValueError naming the problem: another buffer configuration, a missing, short or altered segment."""
        directory = Path(directory)
        replay.check_saved_config(manifest.get("config"))
        total = int(manifest["total"])
        names = ReplayFiles.names(manifest)
        missing = [n for n in names if not (directory / n).is_file()]
        if missing:
            raise ValueError(f"{len(missing)} replay segment(s) missing in {directory}, e.g. {missing[0]} (a snapshot "
                             "resumes with the replay/ folder beside it: copy both)")
        for i, name in enumerate(names):
            start, stop = int(manifest["start"][i]), int(manifest["stop"][i])
            try:
                with open(directory / name, "rb") as f:
                    skip = start - int(np.load(f))  # steps of the file evicted from the ring since it was written
                    arrays = {field: np.load(f)[skip:] for field in FIELDS}
            except (OSError, ValueError, EOFError) as error:
                raise ValueError(f"replay segment {directory / name} is unreadable ({error})") from None
            for field in FIELDS:
                if len(arrays[field]) != stop - start or _crc(arrays[field]) != int(manifest[f"crc_{field}"][i]):
                    raise ValueError(f"replay segment {directory / name}: its {field} differ from what the snapshot "
                                     "recorded (a file altered or truncated after the snapshot)")
            replay.import_range(start, arrays)
        replay.restore_position(total, manifest["rng"])
