"""What a run ran on: ``RUN_DIR/run.json``, one record per session (the first start and every resume).

Each session says when it started and at which frame (and which snapshot it resumed, with the config keys it
changed), and what it ran on::

    {"started": "2026-12-03T14:02:11Z", "frame": 0, "resumed_from": null, "changes": {},
     "versions": {"python": "3.12.3", "torch": "2.13.0+cpu", "mujoco": "3.17.0", "dm_control": "1.0.40",
                  "gymnasium": "1.4.0", "numpy": "2.3.5", "drq": "0.1.0"},
     "code": {"commit": "45d2bb1...", "dirty": false, "path": "/work/main"},
     "machine": {"cpu": "AMD EPYC (family 25 model 1)", "cores": 2, "torch_cpu_capability": "AVX2",
                 "native_bf16": false, ...} (+ "gpu", "gpu_capability" on CUDA; drq.speed.hardware.describe),
     "host": "node17", "device": "cpu", "precision": "fp32", "precision_reason": "...", "num_threads": 1,
     "gl_backend": "egl"}

Beside the sessions, ``run`` says what the run is, so that the analysis wing (``drq.analysis.health``,
``drq.analysis.report``) reads it instead of guessing it from hydra's files or the task's physics (written by each
session, from its config: a resume that changes a key rewrites it)::

    "run": {"task": "cartpole_swingup", "agent": "drqv2", "seed": 1, "action_repeat": 8, "discount": 0.99,
            "frame_stack": 3, "observation_shape": [9, 84, 84], "action_shape": [1], "action_dim": 1,
            "config": {... the resolved run config, as in the snapshot ...}}

``observation_shape`` is the agent's input (stacked frames, channels first, uint8 pixels); ``action_dim`` is |A|, the
product of ``action_shape``. A Gymnasium run (``task=gym``) adds ``"gym": {"id", "entry_point", "registered",
"max_episode_steps"}`` (:func:`drq.envs.gym_ids.record`), and each session's versions name gymnasium's. A run dir from
before this has no ``run``: :func:`read_run` gives ``{}`` there.

``run.env`` (also the snapshot's ``env``) is what a deployment needs and cannot derive from the networks
(:func:`env_record`; ``drq.load_policy`` and ``python -m drq.export`` read it)::

    "env": {"task": "quadruped_walk", "observation_shape": [9, 84, 84], "frame_stack": 3, "image_size": 84,
            "channel_order": "RGB", "frame_order": "oldest first", "action_repeat": 2, "action_shape": [12],
            "action_low": [-1.0, -1.0, -0.8, ...], "action_high": [1.0, 1.1, 0.8, ...]}

``action_low`` / ``action_high`` are the environment's own bounds, onto which the agent's [-1, 1] is mapped.

``code.commit`` / ``code.dirty`` come from ``git`` in the folder the ``drq`` package was imported from; both are
``null`` where that is no git checkout (an installed package) or git is missing. ``dirty`` counts tracked files only
(run outputs inside the checkout do not make it dirty). The trainer writes the file at start, before the first
step; the same session goes into wandb's config (``provenance``), and the list of sessions into every snapshot
(``provenance``), so a snapshot moved elsewhere still says where it came from. ``drq.analysis.report`` reads it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

FILENAME = "run.json"
FORMAT = "drq-run-v1"
PACKAGES = ("torch", "mujoco", "dm_control", "gymnasium", "numpy", "drq")
_GIT_TIMEOUT_S = 10.0

__all__ = ["FILENAME", "PACKAGES", "code_state", "env_record", "read", "read_run", "record_session", "run_record",
           "session", "versions"]


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


def run_record(config: Mapping[str, Any], observation_shape: tuple[int, ...], action_shape: tuple[int, ...],
               env: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """run.json's ``run`` (see the module docstring) from the resolved config as plain python (``task_name``,
    ``agent.name``, ...) and the shapes the environment gave the agent; ``env``: its :func:`env_record`."""
    record = {"task": config["task_name"], "agent": config["agent"]["name"], "seed": config["seed"],
              "action_repeat": config["action_repeat"], "discount": config["discount"],
              "frame_stack": config["frame_stack"], "observation_shape": [int(n) for n in observation_shape],
              "action_shape": [int(n) for n in action_shape], "action_dim": int(math.prod(action_shape)),
              **({"env": dict(env)} if env is not None else {}), "config": dict(config)}  # fmt: skip
    gym_id = (config.get("gym") or {}).get("id")
    if gym_id is not None:  # task=gym: the env's id or entry point, as gymnasium's registry has it
        from drq.envs.gym_ids import record as gym_record

        record["gym"] = gym_record(gym_id)
    return json.loads(json.dumps(record, default=str))


def env_record(config: Mapping[str, Any], observation_shape: tuple[int, ...], action_low: Any,
               action_high: Any) -> dict[str, Any]:  # fmt: skip
    """The snapshot's ``env`` and run.json's ``run.env`` (see the module docstring): the task, the observation's
    shape and layout, the action repeat and the environment's own action bounds (``Env.action_low`` /
    ``action_high``, float (A,)), as plain JSON types."""
    from drq.envs.frames import CHANNEL_ORDER, FRAME_ORDER

    low, high = [float(v) for v in action_low], [float(v) for v in action_high]
    return {"task": str(config["task_name"]), "observation_shape": [int(n) for n in observation_shape],
            "frame_stack": int(config["frame_stack"]), "image_size": int(config["image_size"]),
            "channel_order": CHANNEL_ORDER, "frame_order": FRAME_ORDER, "action_repeat": int(config["action_repeat"]),
            "action_shape": [len(low)], "action_low": low, "action_high": high}  # fmt: skip


def _load(run_dir: str | Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """The sessions in ``run_dir/run.json``; [] if there is none or it cannot be read."""
    sessions = _load(run_dir).get("sessions")
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The ``run`` record of ``run_dir/run.json``; {} if there is none (a run dir from before it), or no run.json."""
    run = _load(run_dir).get("run")
    return run if isinstance(run, dict) else {}


def record_session(run_dir: str | Path, record: Mapping[str, Any], earlier: list[dict[str, Any]] | None = None,
                   run: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Append ``record`` to ``run_dir/run.json``'s sessions (written atomically) and return them all. ``earlier``:
    the sessions to start from when the run dir has no run.json yet (a snapshot's, for ``resume=PATH`` from another
    run dir). ``run``: the file's ``run`` record (:func:`run_record`); None keeps the one it has."""
    path = Path(run_dir) / FILENAME
    sessions = read(run_dir) or list(earlier or [])
    sessions.append(dict(record))
    run = dict(run) if run is not None else read_run(run_dir)
    data = {"format": FORMAT, **({"run": run} if run else {}), "sessions": sessions}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return sessions
