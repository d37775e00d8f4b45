"""Evaluation episodes, run side by side on several environments.

``run_episodes(envs, act, episodes, ...)`` plays ``episodes`` episodes with the policy ``act``. Episode ``k`` runs on
``envs[k % len(envs)]``, and the environments advance in lockstep: the policy acts for every running episode, then every
environment steps. With :class:`drq.envs.worker.AsyncEnv` workers the steps (physics and the 84x84 render) run in
parallel processes, so ``K`` workers take about ``1/K`` of the time on ``K`` free cores; plain in-process environments
step one after another (the same episodes, no speed-up).

The assignment is fixed and never depends on timing. With ``seeds`` (the trainer and ``drq.evaluate`` pass
:func:`episode_seeds`), episode ``k`` starts with ``reset(seed=seeds[k])``: its initial state depends on the run's
seed, the frame of the evaluation and ``k`` only, so any number of environments plays the same episodes, and a
resumed run needs no fast-forward of the evaluation environments. The same makes a failing environment harmless:
the trainer's eval envs are :class:`drq.envs.restarting.RestartingEnv`s, and when one fails (its worker died or hung,
the env raised) and is replaced, the episode it was playing starts over on the replacement from its seed, so the
returns are those of an evaluation without the failure (``on_restart``).

Progress: ``run_episodes(..., progress=fn)`` calls ``fn(Progress)`` once after the resets and after every lockstep
step. :class:`EvalProgress` is the one both the trainer and ``python -m drq.evaluate`` pass: a tqdm bar (episodes done /
total, frames/s, ETA) on a terminal, else one plain line per finished episode::

    eval | frame 0 | episode 3/10 | return 412.3 | 180 frames/s | ETA 0:01:10
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from drq.envs.restarting import EnvRestarted
from drq.envs.timestep import episode_over
from drq.run.seeds import episode_seeds  # noqa: F401 -- re-exported: where evaluation episodes get their seeds

if TYPE_CHECKING:
    from drq.interfaces import Env

__all__ = ["EpisodeResult", "EpisodesStopped", "EvalProgress", "Progress", "episode_seeds", "run_episodes",
           "resets_per_env"]  # fmt: skip


class EpisodesStopped(Exception):
    """``should_stop()`` returned True: the episodes were abandoned between two steps (no step left pending)."""


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: its undiscounted return and its length in frames (agent steps x action repeat)."""

    episode_return: float
    frames: int


@dataclass(frozen=True)
class Progress:
    """Where :func:`run_episodes` stands. ``frames``: frames played so far over all episodes, finished and running;
    ``finished``: the episodes that ended at this step, as ``(episode index, result)``, in the order they ended."""

    episodes: int
    done: int
    frames: int
    finished: tuple[tuple[int, EpisodeResult], ...] = ()


def resets_per_env(episodes: int, num_envs: int) -> list[int]:
    """How many episodes (``reset()`` calls) ``run_episodes`` gives each of ``num_envs`` environments."""
    return [len(range(i, episodes, num_envs)) for i in range(num_envs)]


def run_episodes(envs: Sequence[Env], act: Callable[[np.ndarray], np.ndarray], episodes: int, action_repeat: int,
                 max_episode_frames: int | None = None,
                 on_step: Callable[[int, Env, float, float, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[Progress], None] | None = None,
                 seeds: Sequence[int] | None = None,
                 on_restart: Callable[[int], None] | None = None) -> list[EpisodeResult]:  # fmt: skip
    """Play ``episodes`` episodes; returns their results in episode order.

    Args:
        envs: environments with drq's env interface (``reset()``, ``step_async(action)``, ``step_wait()`` ->
            :class:`drq.envs.pixels.TimeStep`): ``AsyncEnv`` workers step in parallel, in-process envs when waited on.
        act: observation (uint8 ``(3k, H, W)``) -> action (float32 ``(A,)``).
        episodes: number of episodes (>= 1).
        action_repeat: frames per agent step (episode lengths are counted in frames).
        max_episode_frames: end episodes after this many frames (``None``: the task's own end).
        on_step: called as ``on_step(episode, env, reward, episode_return, frames)`` after each reset (``reward``,
            ``episode_return`` and ``frames`` 0) and after each step, e.g. to record a video of episode 0.
        should_stop: polled before each lockstep step; when it returns True, :class:`EpisodesStopped` is raised (the
            environments are left mid-episode; the trainer uses it to stop at a signal).
        progress: called with a :class:`Progress` after the first resets and after every lockstep step (e.g.
            :class:`EvalProgress`).
        seeds: one env seed per episode (:func:`episode_seeds`): episode ``k`` starts with ``reset(seed=seeds[k])``;
            ``None``: plain ``reset()`` (each env's own stream, so the episodes depend on ``len(envs)``).
        on_restart: called as ``on_restart(episode)`` when an env raised
            :class:`drq.envs.restarting.EnvRestarted` (it failed and was replaced) while playing ``episode``, before
            the episode starts again on the replacement, from its seed: what was recorded of it must go (the
            trainer drops the partial video of episode 0). The episode's result is that of the full replay, so with
            ``seeds`` a failed env changes no result. Other exceptions of the envs propagate.
    """
    if episodes < 1:
        raise ValueError(f"run_episodes: episodes must be >= 1, got {episodes}")
    if not envs:
        raise ValueError("run_episodes: no environments given")
    if seeds is not None and len(seeds) != episodes:
        raise ValueError(f"run_episodes: {len(seeds)} seeds for {episodes} episodes")
    num_envs = len(envs)
    results: list[EpisodeResult | None] = [None] * episodes
    running: dict[int, dict[str, Any]] = {}  # env index -> its current episode

    def start(i: int, episode: int) -> None:
        """Start ``episode`` on env ``i``; again, from its seed, each time the env fails and is replaced."""
        while True:
            try:
                ts = envs[i].reset() if seeds is None else envs[i].reset(seed=seeds[episode])
                running[i] = {"episode": episode, "ts": ts, "return": 0.0, "frames": 0}
                if on_step is not None:
                    on_step(episode, envs[i], 0.0, 0.0, 0)
                return
            except EnvRestarted:
                running.pop(i, None)
                if on_restart is not None:
                    on_restart(episode)

    def play_again(i: int) -> None:
        """Env ``i`` failed mid-episode and was replaced: its episode starts over."""
        episode = running.pop(i)["episode"]
        if on_restart is not None:
            on_restart(episode)
        start(i, episode)

    for i in range(min(num_envs, episodes)):
        start(i, i)
    frames_played, done = 0, 0
    if progress is not None:
        progress(Progress(episodes, 0, 0))
    while running:
        if should_stop is not None and should_stop():
            raise EpisodesStopped(f"stopped with {len(running)} episode(s) running")
        actions = {i: act(run["ts"].observation) for i, run in running.items()}
        stepping = []
        for i, action in actions.items():
            try:
                envs[i].step_async(action)
                stepping.append(i)
            except EnvRestarted:
                play_again(i)
        finished: list[tuple[int, EpisodeResult]] = []
        for i in stepping:
            env, run = envs[i], running[i]
            try:
                ts = env.step_wait()
                run["ts"], run["return"], run["frames"] = ts, run["return"] + ts.reward, run["frames"] + action_repeat
                frames_played += action_repeat
                if on_step is not None:
                    on_step(run["episode"], env, ts.reward, run["return"], run["frames"])
            except EnvRestarted:
                play_again(i)
                continue
            if episode_over(ts, run["frames"], max_episode_frames):
                results[run["episode"]] = EpisodeResult(float(run["return"]), int(run["frames"]))
                finished.append((run["episode"], results[run["episode"]]))
                del running[i]
                if run["episode"] + num_envs < episodes:
                    start(i, run["episode"] + num_envs)
        done += len(finished)
        if progress is not None:
            progress(Progress(episodes, done, frames_played, tuple(finished)))
    return [r for r in results if r is not None]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class EvalProgress:
    """Shows :func:`run_episodes`' progress: a tqdm bar when ``file`` is a terminal, else one line per finished
    episode through ``write``. Use it as a context manager (the bar is removed on exit).

    Both show episodes done / total, frames/s (all frames played, over the wall time since this object was made, the
    resets included) and the ETA: the frames still expected (``episodes x`` the mean length of the finished ones,
    minus those played) over frames/s; ``?`` until the first episode ends.

    Args:
        label: what is evaluated, e.g. ``'eval | frame 10,000'``; it starts every line.
        write: where plain lines go (default: ``print`` to ``file``).
        file: the bar's stream (default ``sys.stderr``); ``tty``: force bar (True) or lines (False) instead of asking
            ``file.isatty()``. ``clock``: seconds (``time.monotonic``; tests pass their own). ``min_interval``: the bar
            is redrawn at most this often between episode ends (seconds).
    """

    def __init__(self, label: str, write: Callable[[str], None] | None = None, file: IO[str] | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = 0.5) -> None:
        self.label = label
        self.file = file if file is not None else sys.stderr
        self.tty = bool(getattr(self.file, "isatty", lambda: False)()) if tty is None else tty
        self.write = write if write is not None else (lambda line: print(line, file=self.file, flush=True))
        self.clock, self.min_interval = clock, min_interval
        self.start = clock()
        self._finished_frames = 0
        self._last_draw = -float("inf")
        self._bar: Any = None

    def rate_and_eta(self, progress: Progress) -> tuple[float, float | None]:
        """``(frames/s, seconds left or None)`` at ``progress``."""
        elapsed = self.clock() - self.start
        fps = progress.frames / elapsed if elapsed > 0 else 0.0
        if not progress.done or fps <= 0:
            return fps, None
        expected = progress.episodes * self._finished_frames / progress.done
        return fps, max(expected - progress.frames, 0.0) / fps

    def __call__(self, progress: Progress) -> None:
        self._finished_frames += sum(result.frames for _, result in progress.finished)
        fps, eta = self.rate_and_eta(progress)
        speed = f"{fps:.0f} frames/s | ETA {_clock(eta) if eta is not None else '?'}"
        if not self.tty:
            for count, (_, result) in enumerate(progress.finished, progress.done - len(progress.finished) + 1):
                self.write(f"{self.label} | episode {count}/{progress.episodes} | return "
                           f"{result.episode_return:.1f} | {speed}")
            return
        now, postfix = self.clock(), speed.replace(" | ", ", ")
        if self._bar is None:  # drawn once here
            from tqdm import tqdm

            self._bar = tqdm(total=progress.episodes, initial=progress.done, desc=self.label, file=self.file,
                             leave=False, dynamic_ncols=True, postfix=postfix,
                             bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} episodes [{elapsed}{postfix}]")  # fmt: skip
        elif progress.finished or now - self._last_draw >= self.min_interval:
            self._bar.n = progress.done
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.refresh()
        else:
            return
        self._last_draw = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "EvalProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
