"""Environments that fail on purpose, for tests/test_env_restarts.py. Picklable (module-level classes built through
``functools.partial``), so that spawned env workers build them too: a spawned worker gets the parent's ``sys.path``
and imports this module. Importing it costs nothing (numpy and drq's TimeStep only; dm_control loads in ``PixelEnv``).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from drq.envs.timestep import TimeStep

PHYSICS_MESSAGE = ("Physics state is invalid. Warning enabled: Nan, Inf or huge value in QACC at DOF 0. The simulation "
                   "is unstable. Time = 0.1600.")  # dm_control's words for a diverged simulation  # fmt: skip


def physics_error() -> Exception:
    from dm_control.rl.control import PhysicsError

    return PhysicsError(PHYSICS_MESSAGE)


class FaultyEnv:
    """``PixelEnv(**kwargs)`` that fails in the episodes that start with given seeds.

    ``faults``: ``{reset seed (or 'any'): (step, how)}``: at that step of the episode (0: in ``reset`` itself, 1: its
    first ``step_wait``) it raises dm_control's ``PhysicsError`` (``how='raise'``) or sleeps for an hour
    (``'hang'``). ``once_dir``: each fault fires once in the whole test (a marker file there), so that an episode
    played again does not fail again; None: every time."""

    def __init__(self, faults: dict[Any, tuple[int, str]], once_dir: str | None = None, **kwargs: Any) -> None:
        from drq.envs.pixels import PixelEnv

        self._env = PixelEnv(**kwargs)
        self.faults, self.once_dir = faults, once_dir
        self.observation_shape, self.action_shape = self._env.observation_shape, self._env.action_shape
        self.action_low, self.action_high, self.backend = self._env.action_low, self._env.action_high, self._env.backend
        self._fault: tuple[int, str] | None = None
        self._step = 0

    def _maybe_fail(self) -> None:
        if self._fault is None or self._fault[0] != self._step:
            return
        if self.once_dir is not None:
            marker = Path(self.once_dir) / f"{self._seed}-{self._step}"
            if marker.exists():
                return
            marker.touch()
        if self._fault[1] == "hang":
            time.sleep(3600)
        raise physics_error()

    def reset(self, seed: int | None = None) -> TimeStep:
        self._seed, self._step = seed, 0
        self._fault = self.faults.get(seed, self.faults.get("any"))
        self._maybe_fail()
        return self._env.reset(seed=seed)

    def step_async(self, action: np.ndarray) -> None:
        self._env.step_async(action)

    def step_wait(self) -> TimeStep:
        self._step += 1
        self._maybe_fail()
        return self._env.step_wait()

    def step(self, action: np.ndarray) -> TimeStep:
        self.step_async(action)
        return self.step_wait()

    def render(self, size: int = 256) -> np.ndarray:
        return self._env.render(size)

    def close(self) -> None:
        self._env.close()


def faulty_env_factory(faults: dict[Any, tuple[int, str]], once_dir: str | None = None):
    """A stand-in for ``drq.run.build.env_factory``: the run's env (the config's keyword arguments) made faulty."""

    def env_factory(cfg: Any, **overrides: Any):
        from drq.run.build import env_kwargs

        return functools.partial(FaultyEnv, faults, once_dir, **{**env_kwargs(cfg), **overrides})

    return env_factory


class TinyEnv:
    """A 4x4-pixel env without a simulator (a worker starts in a fraction of a second): ``how`` at its second step:
    ``'exit'`` writes a line to stderr and exits with code 7, ``'hang'`` sleeps, ``'raise'`` raises ValueError; at
    every reset it writes ``'reset <seed>'`` to stderr."""

    observation_shape, action_shape = (3, 4, 4), (1,)
    action_low, action_high = np.array([-1.0]), np.array([1.0])

    def __init__(self, how: str | None = None) -> None:
        self.how, self._step, self._action = how, 0, None

    def reset(self, seed: int | None = None) -> TimeStep:
        self._step = 0
        print(f"reset {seed}", file=sys.stderr, flush=True)
        return TimeStep(np.zeros((3, 4, 4), np.uint8), np.zeros(1, np.float32), 0.0, 1.0, True, False)

    def step_async(self, action: np.ndarray) -> None:
        self._action = np.asarray(action, np.float32)

    def step_wait(self) -> TimeStep:
        self._step += 1
        if self._step == 2 and self.how == "exit":
            print("tiny env: giving up now", file=sys.stderr, flush=True)
            os._exit(7)
        if self._step == 2 and self.how == "hang":
            time.sleep(3600)
        if self._step == 2 and self.how == "raise":
            raise ValueError("tiny env: bad step\nmore detail on a second line")
        return TimeStep(np.full((3, 4, 4), self._step, np.uint8), self._action, 1.0, 1.0, False, False)

    def step(self, action: np.ndarray) -> TimeStep:
        self.step_async(action)
        return self.step_wait()

    def render(self, size: int = 256) -> np.ndarray:
        return np.zeros((size, size, 3), np.uint8)

    def close(self) -> None:
        pass
