"""What every drq env does around its simulator: the agent's action checked and mapped onto the env's own bounds, and
the split step (``step_async`` stores the action, ``step_wait`` runs it; ``step`` is both).

:class:`SplitStepEnv` is the base of :class:`drq.envs.pixels.PixelEnv` (DMC) and :class:`drq.envs.gym_pixels.
GymPixelEnv` (Gymnasium): each sets its bounds with :meth:`SplitStepEnv._set_action_space` and implements
:meth:`SplitStepEnv._run` (``action_repeat`` frames of its simulator, one picture) and ``reset``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drq.envs.timestep import TimeStep

ACTION_TOLERANCE = 1e-5  # actions may exceed [-1, 1] by float rounding; they are clipped, larger excess is an error


class SplitStepEnv:
    """The agent's side of an env: actions float32 ``(A,)`` in [-1, 1], mapped onto ``[action_low, action_high]``
    (float64 ``(A,)``, the env's own bounds) as ``low + (a + 1) (high - low) / 2`` in float64, kept inside the bounds
    against rounding and cast to the env's action dtype; the identity where the bounds are [-1, 1] (most DMC tasks:
    the action goes through bit for bit, as DrQ-v2 passes it)."""

    task_name: str
    action_shape: tuple[int, ...]
    action_low: np.ndarray
    action_high: np.ndarray

    def _set_action_space(self, low: Any, high: Any, shape: tuple[int, ...], dtype: Any) -> None:
        self.action_shape = tuple(int(n) for n in shape)
        self.action_low = np.broadcast_to(np.asarray(low, np.float64), self.action_shape).copy()
        self.action_high = np.broadcast_to(np.asarray(high, np.float64), self.action_shape).copy()
        self._action_dtype = np.dtype(dtype)
        self._half_span = 0.5 * (self.action_high - self.action_low)
        self._identity = bool(np.all(self.action_low == -1.0) and np.all(self.action_high == 1.0))
        self._pending_action: np.ndarray | None = None
        self._needs_reset = True

    def _checked_action(self, action: Any) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape} for {self.task_name}, got {action.shape}")
        largest = float(np.abs(action).max())
        if not largest <= 1.0 + ACTION_TOLERANCE:  # also NaN
            raise ValueError(f"action must be finite and in [-1, 1], got {action}")
        return action if largest <= 1.0 else np.minimum(np.maximum(action, -1.0), 1.0)  # (np.clip: 4x slower here)

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> [action_low, action_high] (see the class docstring), in the env's action dtype."""
        if self._identity:
            return action.astype(self._action_dtype)
        scaled = self.action_low + (action.astype(np.float64) + 1.0) * self._half_span
        return np.minimum(np.maximum(scaled, self.action_low), self.action_high).astype(self._action_dtype)

    def _run(self, action: np.ndarray, env_action: np.ndarray) -> TimeStep:
        """Run ``env_action`` for ``action_repeat`` frames (fewer if the episode ends), take one picture and return
        the TimeStep (``action``: the agent's, stored in it); set ``self._needs_reset`` when the episode ended."""
        raise NotImplementedError

    def step_async(self, action: np.ndarray) -> None:
        """Check and store ``action`` (float32 (A,) in [-1, 1]); :meth:`step_wait` runs it."""
        if self._needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        if self._pending_action is not None:
            raise RuntimeError("step_async() called twice without step_wait()")
        self._pending_action = self._checked_action(action)

    def step_wait(self) -> TimeStep:
        """The TimeStep of the action stored by :meth:`step_async` (run now)."""
        if self._pending_action is None:
            raise RuntimeError("step_wait() called without step_async()")
        action, self._pending_action = self._pending_action, None
        return self._run(action, self._env_action(action))

    def step(self, action: np.ndarray) -> TimeStep:
        """One agent step: ``step_async(action)`` then ``step_wait()``."""
        self.step_async(action)
        return self.step_wait()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
