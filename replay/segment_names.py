"""The names of the replay's segment files (:mod:`replay.segments`), and which of them a snapshot file names, read
without torch (the pre-run disk check, :func:`drq.machine.memory.usable_disk_bytes`, runs before torch is imported).

A segment is named after its grid cell's first step, its stop and a digest of its content:
``seg-<cell start>-<stop>-<digest>.npys`` (12 digits, 12 digits, 8 hex digits). The digest makes the name unique to
the content: after a resume from an older snapshot the run writes steps again whose cells and stops are those of
files another snapshot names, with other contents (another timeline), and a file is never written over. Snapshots
from before the digest (manifest format ``drq-replay-segments-v1``) name ``seg-<cell start>-<stop>.npys``; both
are read.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

SEGMENT_NAME = re.compile(r"seg-(\d{12})-(\d{12})(?:-([0-9a-f]{8}))?\.npys")
_IN_PICKLE = re.compile(rb"seg-\d{12}-\d{12}-[0-9a-f]{8}\.npys")
_OLD_MANIFEST = b"drq-replay-segments-v1"  # its files are named by start and stop tensors: not readable here
_SNAPSHOT = b"drq-snapshot-"  # the start of drq.run.snapshot.FORMAT, in the first bytes of every snapshot


def segment_name(start: int, stop: int, digest: int | None = None) -> str:
    """``seg-<start>-<stop>-<digest>.npys``; without ``digest``, the name of a segment from before digests."""
    return f"seg-{start:012d}-{stop:012d}{'' if digest is None else f'-{digest:08x}'}.npys"


def names_in_snapshot(path: str | Path) -> set[str] | None:
    """The segment files the snapshot file at ``path`` names: the names written in its pickle (a ``torch.save``
    zip: ``<archive>/data.pkl``, stored uncompressed, holds every string of the snapshot). An empty set for a file
    that is not a snapshot or holds no replay manifest; None where this cannot tell: a snapshot that cannot be read
    (a copy still being written) or one from before names were written (``drq-replay-segments-v1``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickle_name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            pickled = archive.read(pickle_name)
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError, ValueError):
        try:
            with open(path, "rb") as f:
                return None if _SNAPSHOT in f.read(4096) else set()
        except OSError:
            return None
    if _OLD_MANIFEST in pickled:
        return None
    return {name.decode() for name in _IN_PICKLE.findall(pickled)}
