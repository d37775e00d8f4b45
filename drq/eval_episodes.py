"""Evaluation episodes, run side by side on several environments.

``run_episodes(envs, act, episodes, ...)`` plays ``episodes`` episodes with the policy ``act``. Episode ``k`` runs on
``envs[k % len(envs)]``, and the environments advance in lockstep: the policy acts for every running episode, then every
environment steps. With :class:`drq.env_worker.AsyncEnv` workers the steps (physics and the 84x84 render) run in
parallel processes, so ``K`` workers take about ``1/K`` of the time on ``K`` free cores; plain in-process environments
step one after another (the same episodes, no speed-up).

The assignment is fixed, so the episodes (and each environment's number of ``reset()`` calls, which the trainer
fast-forwards on resume) depend only on ``episodes`` and ``len(envs)``, never on timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from drq.env import episode_over

__all__ = ["EpisodeResult", "EpisodesStopped", "run_episodes", "resets_per_env"]


class EpisodesStopped(Exception):
    """``should_stop()`` returned True: the episodes were abandoned between two steps (no step left pending)."""


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: its undiscounted return and its length in frames (agent steps x action repeat)."""

    episode_return: float
    frames: int


def resets_per_env(episodes: int, num_envs: int) -> list[int]:
    """How many episodes (``reset()`` calls) ``run_episodes`` gives each of ``num_envs`` environments."""
    return [len(range(i, episodes, num_envs)) for i in range(num_envs)]


def run_episodes(envs: Sequence[Any], act: Callable[[np.ndarray], np.ndarray], episodes: int, action_repeat: int,
                 max_episode_frames: int | None = None,
                 on_step: Callable[[int, Any, float, float, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[EpisodeResult]:  # fmt: skip
    """Play ``episodes`` episodes; returns their results in episode order.

    Args:
        envs: environments with drq's env interface (``reset()``, ``step_async(action)``, ``step_wait()`` ->
            :class:`drq.env.TimeStep`): ``AsyncEnv`` workers step in parallel, in-process envs when waited on.
        act: observation (uint8 ``(3k, H, W)``) -> action (float32 ``(A,)``).
        episodes: number of episodes (>= 1).
        action_repeat: frames per agent step (episode lengths are counted in frames).
        max_episode_frames: end episodes after this many frames (``None``: the task's own end).
        on_step: called as ``on_step(episode, env, reward, episode_return, frames)`` after each reset (``reward``,
            ``episode_return`` and ``frames`` 0) and after each step, e.g. to record a video of episode 0.
        should_stop: polled before each lockstep step; when it returns True, :class:`EpisodesStopped` is raised (the
            environments are left mid-episode; the trainer uses it to stop at a signal).
    """
    if episodes < 1:
        raise ValueError(f"run_episodes: episodes must be >= 1, got {episodes}")
    if not envs:
        raise ValueError("run_episodes: no environments given")
    num_envs = len(envs)
    results: list[EpisodeResult | None] = [None] * episodes
    running: dict[int, dict[str, Any]] = {}  # env index -> its current episode

    def start(i: int, episode: int) -> None:
        ts = envs[i].reset()
        running[i] = {"episode": episode, "ts": ts, "return": 0.0, "frames": 0}
        if on_step is not None:
            on_step(episode, envs[i], 0.0, 0.0, 0)

    for i in range(min(num_envs, episodes)):
        start(i, i)
    while running:
        if should_stop is not None and should_stop():
            raise EpisodesStopped(f"stopped with {len(running)} episode(s) running")
        actions = {i: act(run["ts"].observation) for i, run in running.items()}
        for i, action in actions.items():
            envs[i].step_async(action)
        for i in actions:
            env, run = envs[i], running[i]
            ts = env.step_wait()
            run["ts"], run["return"], run["frames"] = ts, run["return"] + ts.reward, run["frames"] + action_repeat
            if on_step is not None:
                on_step(run["episode"], env, ts.reward, run["return"], run["frames"])
            if episode_over(ts, run["frames"], max_episode_frames):
                results[run["episode"]] = EpisodeResult(float(run["return"]), int(run["frames"]))
                del running[i]
                if run["episode"] + num_envs < episodes:
                    start(i, run["episode"] + num_envs)
    return [r for r in results if r is not None]
