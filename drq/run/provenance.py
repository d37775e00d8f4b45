"""What a run ran on: ``RUN_DIR/run.json``, one record per session (the first start and every resume).

Each session says when it started and at which frame (and which snapshot it resumed, with the config keys it
changed), and what it ran on::

    {"started": "2026-12-03T14:02:11Z", "frame": 0, "resumed_from": null, "changes": {},
     "versions": {"python": "3.12.3", "torch": "2.13.0+cpu", "mujoco": "3.17.0", "dm_control": "1.0.40",
                  "numpy": "2.3.5", "drq": "0.1.0"},
     "code": {"commit": "45d2bb1...", "dirty": false, "path": "/work/main"},
     "machine": {"cpu": "AMD EPYC (family 25 model 1)", "cores": 2, "torch_cpu_capability": "AVX2",
                 "native_bf16": false, ...} (+ "gpu", "gpu_capability" on CUDA; drq.speed.hardware.describe),
     "host": "node17", "device": "cpu", "precision": "fp32", "precision_reason": "...", "num_threads": 1,
     "gl_backend": "egl"}

``code.commit`` / ``code.dirty`` come from ``git`` in the folder the ``drq`` package was imported from; both are
``null`` where that is no git checkout (an installed package) or git is missing. ``dirty`` counts tracked files only
(run outputs inside the checkout do not make it dirty). The trainer writes the file at start, before the first
step; the same session goes into wandb's config (``provenance``), and the list of sessions into every snapshot
(``provenance``), so a snapshot moved elsewhere still says where it came from. ``drq.analysis.report`` reads it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

FILENAME = "run.json"
FORMAT = "drq-run-v1"
PACKAGES = ("torch", "mujoco", "dm_control", "numpy", "drq")
_GIT_TIMEOUT_S = 10.0

__all__ = ["FILENAME", "PACKAGES", "code_state", "read", "record_session", "session", "versions"]


def versions() -> dict[str, str | None]:
    """Python's version and each of :data:`PACKAGES`' installed version (``None`` if not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or it hung
    return done.stdout if done.returncode == 0 else None


def code_state(folder: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "path"}`` of the git checkout holding ``folder`` (default: the one ``drq`` was imported
    from); commit and dirty are None outside a checkout or without git."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[2]
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None,
            "path": str(folder)}  # fmt: skip


def session(device: str, precision: str, precision_reason: str, num_threads: int, gl_backend: str | None,
            frame: int = 0, resumed_from: str | None = None,
            changes: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """One session's record (see the module docstring). ``frame``: where it starts (frames); ``changes``: the config
    keys its resume changed, ``{key: (old, new)}``."""
    from drq.speed.hardware import describe

    record = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "frame": int(frame),
        "resumed_from": resumed_from, "changes": {k: [old, new] for k, (old, new) in (changes or {}).items()},
        "versions": versions(), "code": code_state(), "machine": describe(device), "host": platform.node(),
        "device": str(device), "precision": precision, "precision_reason": precision_reason,
        "num_threads": int(num_threads), "gl_backend": gl_backend or os.environ.get("MUJOCO_GL"),
    }  # fmt: skip
    # plain JSON types only (torch.__version__ is a str subclass that torch.load(weights_only=True) refuses)
    return json.loads(json.dumps(record, default=str))


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """The sessions in ``run_dir/run.json``; [] if there is none or it cannot be read."""
    try:
        data = json.loads((Path(run_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return []
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def record_session(run_dir: str | Path, record: Mapping[str, Any],
                   earlier: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Append ``record`` to ``run_dir/run.json``'s sessions (written atomically) and return them all. ``earlier``:
    the sessions to start from when the run dir has no run.json yet (a snapshot's, for ``resume=PATH`` from another
    run dir)."""
    path = Path(run_dir) / FILENAME
    sessions = read(run_dir) or list(earlier or [])
    sessions.append(dict(record))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": FORMAT, "sessions": sessions}, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return sessions
