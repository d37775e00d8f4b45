"""Where logged numbers go: the console, ``train.csv`` / ``eval.csv`` / ``metrics.jsonl`` in the run dir, and wandb.

All rows carry ``frame`` (the clock users see) and ``step`` (agent steps). The files are append-only; their *position*
(rows written so far) goes into every snapshot so that a resumed run first cuts them back to where the snapshot was
taken (:meth:`RunFiles.truncate`) and the final files equal those of a run that never stopped. A row that cannot be
written (a full disk) stops the run with one line (:class:`drq.run.snapshot.RunDirError`): the snapshot on disk is
whole, and the resume cuts the files back to it.

wandb: ``mode=auto`` is ``online`` when credentials exist (``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in
``~/.netrc``) and ``offline`` otherwise (one line says how to ``wandb sync``); ``WANDB_MODE`` in the environment wins
over ``auto``. Nothing waits on a login prompt. Metrics are logged under ``train/``, ``eval/`` and ``health/`` against
``frame`` (``wandb.define_metric``); a resume that changed settings logs ``resume/`` there too.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import netrc
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from drq.config.schema import WANDB_MODES
from drq.run.snapshot import RunDirError

TRAIN_COLUMNS = ("frame", "step", "episode", "episode_reward", "episode_length", "fps", "total_time")
EVAL_COLUMNS = ("frame", "step", "episode", "episode_reward", "episode_length", "total_time")


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` becomes one :class:`RunDirError` line naming it and the cause."""
    try:
        yield
    except OSError as error:
        raise RunDirError(f"{RunDirError.of('write', error, path)}; the run stops here, its snapshot on disk (if any) "
                          "is whole: make room, then run the same command to go on from it") from None


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _truncate_lines(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of ``path`` (rewritten atomically); a missing file stays missing."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        lines = f.readlines()
    if len(lines) <= keep:
        return
    tmp = path.with_name(path.name + ".tmp")
    with _writing(tmp), open(tmp, "wb") as f:
        f.writelines(lines[:keep])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """A JSON-friendly number (non-finite floats as strings 'nan', 'inf', '-inf')."""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else str(value)


class RunFiles:
    """``train.csv``, ``eval.csv`` (headers + one row per episode / evaluation) and ``metrics.jsonl`` in ``run_dir``."""

    FILES = ("train.csv", "eval.csv", "metrics.jsonl")

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def position(self) -> dict[str, int]:
        """Lines written so far per file (CSV counts include the header)."""
        return {name: _count_lines(self.run_dir / name) for name in self.FILES}

    def truncate(self, position: Mapping[str, int]) -> None:
        """Cut each file back to ``position`` (from :meth:`position` at snapshot time)."""
        for name in self.FILES:
            _truncate_lines(self.run_dir / name, int(position.get(name, 0)))

    def _csv_row(self, name: str, columns: tuple[str, ...], row: Mapping[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists() or path.stat().st_size == 0
        with _writing(path), open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(columns)
            writer.writerow([_plain(row[c]) for c in columns])

    def train_episode(self, row: Mapping[str, Any]) -> None:
        """One finished training episode: keys :data:`TRAIN_COLUMNS`."""
        self._csv_row("train.csv", TRAIN_COLUMNS, row)

    def evaluation(self, row: Mapping[str, Any]) -> None:
        """One evaluation: keys :data:`EVAL_COLUMNS` (``episode_reward`` is the mean return)."""
        self._csv_row("eval.csv", EVAL_COLUMNS, row)

    def metrics(self, section: str, frame: int, step: int, total_time: float, values: Mapping[str, float]) -> None:
        """One line of ``metrics.jsonl``: ``{"section", "frame", "step", "total_time", <metric>: value, ...}``."""
        line = {"section": section, "frame": int(frame), "step": int(step), "total_time": float(total_time)}
        line.update({k: _plain(v) for k, v in values.items()})
        with _writing(self.run_dir / "metrics.jsonl"), open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def resume(self, frame: int, step: int, total_time: float, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """A ``{"section": "resume", "frame", "step", "total_time", "changes": {key: [old, new], ...}}`` line of
        ``metrics.jsonl``: the config keys a resumed session changed (values as JSON, anything else as text)."""
        line = {"section": "resume", "frame": int(frame), "step": int(step), "total_time": float(total_time),
                "changes": {k: [old, new] for k, (old, new) in changes.items()}}  # fmt: skip
        with _writing(self.run_dir / "metrics.jsonl"), open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line, default=str) + "\n")

    def restart(self, frame: int, step: int, total_time: float, env: str, reason: str, worker_restarts: int) -> None:
        """A ``{"section": "restart", "frame", "step", "total_time", "env", "reason", "worker_restarts"}`` line of
        ``metrics.jsonl``: an environment failed at ``frame`` and was restarted (``env``: ``'train env'``, ``'eval env
        1'``; ``reason``: the line said on the console; ``worker_restarts``: restarts so far in the run, this one
        included). :mod:`drq.run.restarts`."""
        line = {"section": "restart", "frame": int(frame), "step": int(step), "total_time": float(total_time),
                "env": env, "reason": reason, "worker_restarts": int(worker_restarts)}  # fmt: skip
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def format_eval_line(frame: int, step: int, mean_return: float, episodes: int, total_time: float, fps: float) -> str:
    """The one console line per evaluation."""
    h, rem = divmod(int(total_time), 3600)
    m, s = divmod(rem, 60)
    return (
        f"eval | frame {frame:>10,} | step {step:>9,} | return {mean_return:9.2f} (mean of {episodes}) "
        f"| {h:d}:{m:02d}:{s:02d} | {fps:6.1f} frames/s"
    )


# ----------------------------------------------------------------------------------------------------------- wandb
def wandb_credentials_present(environ: Mapping[str, str] | None = None) -> bool:
    """True if ``WANDB_API_KEY`` is set or ``~/.netrc`` (or ``$NETRC``) has a password for ``api.wandb.ai``."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    path = environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` -> ``online`` | ``offline`` (see module docstring); other modes pass through after a check."""
    environ = os.environ if environ is None else environ
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    forced = environ.get("WANDB_MODE")
    if forced in ("online", "offline", "disabled"):
        return forced
    if forced in ("dryrun",):
        return "offline"
    return "online" if wandb_credentials_present(environ) else "offline"


class WandbSink:
    """A wandb run in ``run_dir/wandb`` (resumed when ``run_id`` is given); no-op when ``mode == 'disabled'``."""

    def __init__(
        self,
        run_dir: str | Path,
        mode: str,
        project: str,
        config: Mapping[str, Any],
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        run_id: str | None = None,
        say: Any = print,
    ) -> None:
        self.mode = resolve_wandb_mode(mode)
        self.run = None
        self.run_id = run_id
        if self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            dir=str(run_dir),
            mode=self.mode,
            project=project,
            entity=entity,
            group=group,
            tags=list(tags or []),
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            config=dict(config),
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run_id = self.run.id
        self.run.define_metric("frame")
        for section in ("train", "eval", "health", "video", "histograms", "resume"):
            self.run.define_metric(f"{section}/*", step_metric="frame")
        if self.mode == "offline":
            say(f"wandb: offline run in {run_dir}/wandb; upload it later with: wandb sync {self._sync_dir(run_dir)}")

    def _sync_dir(self, run_dir: str | Path) -> str:
        directory = getattr(self.run, "dir", None)
        if directory:  # .../wandb/offline-run-<time>-<id>/files -> the offline-run folder
            return str(Path(directory).parent)
        return str(Path(run_dir) / "wandb" / "offline-run-*")

    @property
    def online(self) -> bool:
        return self.run is not None and self.mode == "online"

    def log(self, section: str, frame: int, values: Mapping[str, float]) -> None:
        if self.run is None:
            return
        data: dict[str, Any] = {f"{section}/{k}": float(v) for k, v in values.items()}
        data["frame"] = int(frame)
        self.run.log(data)

    def histograms(self, frame: int, arrays: Mapping[str, Any]) -> None:
        """``arrays``: name -> 1-D numpy array of samples (e.g. per-sample log-prob)."""
        if self.run is None or not arrays:
            return
        data: dict[str, Any] = {f"histograms/{k}": self._wandb.Histogram(v) for k, v in arrays.items()}
        data["frame"] = int(frame)
        self.run.log(data)

    def video(self, frame: int, path: str | Path) -> None:
        if self.run is None:
            return
        self.run.log({"video/eval": self._wandb.Video(str(path), format="mp4"), "frame": int(frame)})

    def resume_changes(self, frame: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """The config keys a resumed session changed, at ``frame``: ``resume/changed_keys`` (a count, a point on the
        frame axis) and ``resume/changes`` (a table: key, old, new)."""
        if self.run is None or not changes:
            return
        table = self._wandb.Table(columns=["key", "old", "new"],
                                  data=[[k, str(old), str(new)] for k, (old, new) in changes.items()])  # fmt: skip
        self.run.log({"resume/changed_keys": len(changes), "resume/changes": table, "frame": int(frame)})

    def alert(self, title: str, text: str) -> None:
        """``wandb.alert`` (online runs only: offline runs cannot deliver alerts)."""
        if not self.online:
            return
        try:
            self.run.alert(title=title, text=text, level=self._wandb.AlertLevel.WARN)
        except Exception:  # noqa: BLE001 -- an alert that cannot be sent must not stop training
            pass

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
