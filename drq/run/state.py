"""What the trainer's parts hand each other: :class:`Parts` (what a run is built from) and :class:`RunState` (the
loop's counters and the training episode in progress).

The trainer (:mod:`drq.run.trainer`) owns one of each and passes them down to the builder (:mod:`drq.run.build`),
the resume (:mod:`drq.run.resume`) and the metric log (:mod:`drq.run.metrics`); none of those reaches back into the
loop. This module imports nothing from the other parts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np

    from drq.config.schema import RunConfig
    from drq.interfaces import Agent, Env
    from drq.run.health import HealthMonitor
    from drq.run.restarts import EnvRestarts
    from drq.run.sinks import RunFiles, WandbSink
    from drq.run.video import VideoRecorder


@dataclass
class RunState:
    """The loop's counters and the current training episode (a snapshot saves them, a resume restores them).

    Agent steps are the loop's own clock: ``frame = step * action_repeat`` (frames are the user's clock). The
    ``next_*`` fields are frames."""

    action_repeat: int
    step: int = 0
    episode: int = 0  # finished training episodes
    train_resets: int = 0  # train env reset() calls; reset k is seeded drq.run.seeds.train_episode_seed(seed, k)
    worker_restarts: int = 0  # environments restarted after a failure, in every session (drq.run.restarts)
    next_eval_frame: int = 0
    last_eval_frame: int = -1
    last_eval_return: float = math.nan
    next_snapshot_frame: int = 0
    next_log_frame: int = 0
    next_histogram_frame: int = 0
    elapsed_before: float = 0.0  # seconds of earlier sessions of this run
    wandb_run_id: str | None = None
    in_episode_at_snapshot: bool = False
    ts: Any = None  # the last time step of the current episode; None: the next iteration starts an episode
    episode_reward: float = 0.0  # the current training episode so far
    episode_frames: int = 0
    episode_actions: list[np.ndarray] = field(default_factory=list)  # float32 (A,) each (mid-episode snapshots)
    start_time: float = field(default_factory=time.time)  # this session's start (time.time(), seconds)

    INT_COUNTERS = ("step", "episode", "train_resets", "next_eval_frame", "last_eval_frame", "next_snapshot_frame",
                    "next_log_frame", "next_histogram_frame")  # fmt: skip

    @property
    def frame(self) -> int:
        return self.step * self.action_repeat

    @property
    def total_time(self) -> float:
        """Seconds of training so far, earlier sessions of this run included."""
        return self.elapsed_before + time.time() - self.start_time

    def counters(self) -> dict[str, Any]:
        """The snapshot's ``counters``: plain ints and floats."""
        return {"step": self.step, "frame": self.frame, "episode": self.episode, "train_resets": self.train_resets,
                "next_eval_frame": self.next_eval_frame, "last_eval_frame": self.last_eval_frame,
                "last_eval_return": self.last_eval_return, "next_snapshot_frame": self.next_snapshot_frame,
                "next_log_frame": self.next_log_frame, "next_histogram_frame": self.next_histogram_frame,
                "total_time": self.total_time, "in_episode": self.ts is not None,
                "worker_restarts": self.worker_restarts}  # fmt: skip

    def restore_counters(self, counters: dict[str, Any]) -> None:
        for key in self.INT_COUNTERS:
            setattr(self, key, int(counters[key]))
        self.last_eval_return = float(counters["last_eval_return"])
        self.elapsed_before = float(counters["total_time"])
        self.in_episode_at_snapshot = bool(counters["in_episode"])
        self.worker_restarts = int(counters.get("worker_restarts", 0))  # none in snapshots from before issue 33

    def start_episode(self, ts: Any) -> None:
        self.ts, self.episode_reward, self.episode_frames, self.episode_actions = ts, 0.0, 0, []


@dataclass
class Parts:
    """What a run is built from, filled in by :func:`drq.run.build.build` in order (so that
    :func:`drq.run.build.close_parts` closes exactly what exists when building fails part way)."""

    cfg: RunConfig
    run_dir: Path
    say: Callable[[str], None]
    device: str = "cpu"
    num_threads: int = 1  # torch's intra-op threads in this run
    precision_resolved: str = ""
    precision_reason: str = ""
    num_eval_workers: int = 1
    files: RunFiles | None = None
    train_env: Env | None = None
    eval_envs: list[Env] | None = None  # built on first use (drq.run.build.eval_envs)
    observation_shape: tuple[int, ...] = ()  # the agent's input: stacked frames (frame_stack * 3, H, W), uint8
    action_shape: tuple[int, ...] = ()
    replay: Any = None  # replay.FrameReplay
    replay_files: Any = None  # replay.segments.ReplayFiles (RUN_DIR/replay)
    snapshots_here: Any = None  # drq.run.snapshot.SnapshotsHere: what the run dir's snapshots name there
    restarts: EnvRestarts | None = None  # what a failing environment does (built before the envs)
    agent: Agent | None = None
    health: HealthMonitor | None = None
    video: VideoRecorder | None = None
    wandb: WandbSink | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)  # run.json's sessions (this one last)
    resume_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # config keys a resume changed

    @property
    def snapshot_path(self) -> Path:
        from drq.run.snapshot import FILENAME

        return self.run_dir / FILENAME

    def config_dict(self) -> dict[str, Any]:
        """The run's config as plain python, plus what ``precision=auto`` resolved to: the snapshot's ``config`` and
        wandb's run config."""
        return {**self.cfg.to_dict(), "precision_resolved": self.precision_resolved,
                "precision_reason": self.precision_reason}  # fmt: skip
