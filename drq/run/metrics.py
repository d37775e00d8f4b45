"""The metric window and the run's logging: what the loop writes to train.csv / eval.csv / metrics.jsonl, wandb and
the console.

Metrics stay on the device: each update's 0-dim tensors are summed there (:class:`MetricWindow`), and the means are
copied to the host once per ``log_every_frames`` (:meth:`RunLog.health_line`: one ``health`` line in metrics.jsonl,
wandb ``health/``, the health monitor's warnings, the non-finite check).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from drq.run.sinks import format_eval_line

if TYPE_CHECKING:
    from pathlib import Path

    from drq.run.health import HealthMonitor
    from drq.run.sinks import RunFiles, WandbSink
    from drq.run.state import RunState

LOSS_FIRST = ("critic_loss", "actor_loss", "alpha_loss")
"""Named first when several metrics are non-finite at once."""


class NonFiniteMetricError(RuntimeError):
    """Training stopped because a metric became NaN or infinite; the last good snapshot is kept."""


class MetricWindow:
    """Sums of the updates' 0-dim metric tensors since the last ``health`` line, kept on the device (no host sync per
    update), each with the number of updates that computed it (SAC's actor metrics come from actor steps only);
    ``count``: updates summed, ``count_since_hist``: updates since the last histograms."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.count = 0
        self.count_since_hist = 0

    def add(self, metrics: Mapping[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1
        self.count_since_hist += 1

    def take_means(self) -> tuple[dict[str, float], int]:
        """Each metric's mean over the updates that computed it (one host copy) and the number of updates in the
        window; the window starts again."""
        names = list(self.sums)
        sums = torch.stack([self.sums[k] for k in names]).cpu().tolist()
        means = {k: total / self.counts[k] for k, total in zip(names, sums)}
        window = self.count
        self.sums, self.counts, self.count = {}, {}, 0
        return means, window

    def state_dict(self) -> dict[str, Any]:
        """The snapshot's ``health_window`` (sums on the CPU)."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "counts": dict(self.counts),
                "count": self.count, "count_since_hist": self.count_since_hist}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any] | None, device: str) -> None:
        """``state`` from :meth:`state_dict`; a snapshot from before per-metric counts had every metric in every
        update, so each count is the window's."""
        state = state or {}
        self.sums = {k: v.to(device) for k, v in (state.get("sums") or {}).items()}
        self.count, self.count_since_hist = int(state.get("count", 0)), int(state.get("count_since_hist", 0))
        self.counts = {k: int(n) for k, n in (state.get("counts") or dict.fromkeys(self.sums, self.count)).items()}


class RunLog:
    """The rows and lines of one run: train.csv / eval.csv rows, metrics.jsonl sections, wandb, console lines."""

    def __init__(self, files: RunFiles, wandb: WandbSink, health: HealthMonitor, say: Callable[[str], None],
                 alert_title: str) -> None:  # fmt: skip
        """``alert_title``: what a health warning's wandb alert names (task and agent)."""
        self.files, self.wandb, self.health, self.say, self.alert_title = files, wandb, health, say, alert_title

    def health_line(self, window: MetricWindow, state: RunState, snapshot_path: Path) -> None:
        """The window's means as one ``health`` line; raises :class:`NonFiniteMetricError` on a NaN or infinity."""
        if not window.count:
            return
        values, updates = window.take_means()
        frame = state.frame
        self.files.metrics("health", frame, state.step, state.total_time, values)
        self.wandb.log("health", frame, values)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            bad.sort(key=lambda k: (k not in LOSS_FIRST, k))
            raise NonFiniteMetricError(
                f"non-finite {bad[0]} ({values[bad[0]]}) at frame {frame:,} (mean over the last {updates} "
                f"updates; also non-finite: {', '.join(bad[1:]) or 'none'}); training stopped, the last good "
                f"snapshot is kept: {snapshot_path if snapshot_path.exists() else 'none yet'}"
            )
        for line in self.health.update(frame, values):
            self.say(f"health warning (frame {frame:,}): {line}")
            self.wandb.alert("drq health", f"{self.alert_title}: {line}")

    def histograms(self, window: MetricWindow, agent: Any, frame: int) -> None:
        """The agent's ``histograms`` (wandb only), if it has any."""
        window.count_since_hist = 0
        hist = getattr(agent, "histograms", None) or {}
        if not hist or self.wandb.run is None:
            return
        arrays = {k: v.detach().float().flatten().cpu().numpy() for k, v in hist.items()}
        self.wandb.histograms(frame, arrays)

    def train_episode(self, state: RunState, buffer_size: int, fps: float) -> None:
        """The finished training episode's train.csv row, ``train`` line and wandb point (``fps``: frames/s); the line
        and the point also carry ``buffer_size`` and ``worker_restarts`` (environment restarts so far in the run)."""
        row = {"frame": state.frame, "step": state.step, "episode": state.episode,
               "episode_reward": state.episode_reward, "episode_length": state.episode_frames, "fps": fps,
               "total_time": state.total_time}  # fmt: skip
        self.files.train_episode(row)
        values = {k: row[k] for k in ("episode", "episode_reward", "episode_length", "fps")}
        values["buffer_size"] = buffer_size
        values["worker_restarts"] = state.worker_restarts
        self.files.metrics("train", state.frame, state.step, row["total_time"], values)
        self.wandb.log("train", state.frame, values)

    def evaluation(self, state: RunState, returns: list[float], lengths: list[int]) -> float:
        """An evaluation's eval.csv row, ``eval`` line, wandb point and console line; returns the mean return.
        ``lengths``: each episode's frames."""
        mean_return = float(np.mean(returns))
        row = {"frame": state.frame, "step": state.step, "episode": state.episode, "episode_reward": mean_return,
               "episode_length": float(np.mean(lengths)), "total_time": state.total_time}  # fmt: skip
        self.files.evaluation(row)
        values = {"episode_reward": mean_return, "episode_length": row["episode_length"],
                  "episode_reward_std": float(np.std(returns)), "episode": state.episode}  # fmt: skip
        self.files.metrics("eval", state.frame, state.step, row["total_time"], values)
        self.wandb.log("eval", state.frame, values)
        fps = state.frame / max(state.total_time, 1e-9)
        self.say(format_eval_line(state.frame, state.step, mean_return, len(returns), state.total_time, fps))
        return mean_return
