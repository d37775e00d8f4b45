"""A Gymnasium env built once and stepped a few frames before a run starts, in a worker process.

What only a built env shows: its action space (a Discrete one is refused), its pictures (uint8 (H, W, 3) or refused)
and whether the camera sees anything. :func:`probe` runs the run's own env factory in a
:class:`drq.envs.worker.AsyncEnv` (a fresh process: no GL context, no imported env module and no state of the env is
left in the caller), resets it, takes :data:`PROBE_STEPS` uniformly random agent steps and closes it: about a second
for gymnasium's MuJoCo envs. A bad env raises its one-line error (:class:`drq.envs.gym_pixels.GymEnvError`,
:class:`drq.envs.gym_ids.GymIdError`) with its message; a camera that sees almost nothing gives one warning line
(:func:`camera_warning`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

PROBE_STEPS = 8  # agent steps taken with uniformly random actions
BACKGROUND_TOLERANCE = 24  # a pixel shows something when a channel differs from the background by more (0..255)
VISIBLE_FRACTION_MIN = 0.01  # fewer pixels than this showing something over the first frames: a warning
# Measured at 84x84 on the first picture, default cameras: InvertedPendulum-v5 0.061, Reacher-v5 0.17, Pusher-v5 0.16,
# Walker2d-v5 0.72, InvertedDoublePendulum-v5 0.004 (a pendulum a few pixels tall), a camera turned to the sky 0.


def visible_fraction(frames: Sequence[np.ndarray]) -> float:
    """The mean over ``frames`` (uint8 (3, H, W) each) of the fraction of their pixels that show something other than
    the background: the first frame's median colour, from which a pixel showing something differs by more than
    :data:`BACKGROUND_TOLERANCE` in a channel."""
    stack = np.stack([np.asarray(f, dtype=np.int16) for f in frames])  # (N, 3, H, W)
    background = np.median(stack[0].reshape(3, -1), axis=1).reshape(1, 3, 1, 1)
    shows = (np.abs(stack - background) > BACKGROUND_TOLERANCE).any(axis=1)  # (N, H, W)
    return float(shows.mean())


def camera_warning(env_id: str, frames: Sequence[np.ndarray], kwargs: Mapping[str, Any] | None = None) -> str | None:
    """One warning line when ``frames`` (the agent's first pictures) are near-constant: the camera sees (almost)
    nothing, with the options that move a gymnasium MuJoCo env's camera; else None."""
    fraction = visible_fraction(frames)
    if fraction >= VISIBLE_FRACTION_MIN:
        return None
    side = np.asarray(frames[0]).shape[-1]
    given = ", ".join(k for k in ("camera_name", "camera_id", "default_camera_config") if k in (kwargs or {}))
    return (f"gym.id={env_id}: only {100 * fraction:.1f}% of the pixels show anything but the background in its "
            f"first {len(frames)} pictures at {side}x{side}: the camera may see (almost) nothing"
            + (f" with {given}" if given else "") + "; try another view: +gym.kwargs.camera_name=NAME, "
            "+gym.kwargs.camera_id=N or '+gym.kwargs={default_camera_config:{distance:2.0,elevation:-20}}' (gymnasium "
            "MuJoCo envs; docs/gymnasium.md#cameras)")


def probe(factory: Callable[[], Any], env_id: str, kwargs: Mapping[str, Any] | None = None,
          steps: int = PROBE_STEPS, seed: int = 0) -> str | None:  # fmt: skip
    """Build ``factory()`` in a worker, reset it and take ``steps`` random agent steps; returns the camera warning
    (or None). Raises the env's own one-line error when it cannot be built, stepped or pictured."""
    from drq.envs.worker import AsyncEnv

    rng = np.random.default_rng(seed)
    with AsyncEnv(factory) as env:
        ts = env.reset()
        frames = [ts.frame]
        for _ in range(steps):
            ts = env.step(rng.uniform(-1.0, 1.0, env.action_shape).astype(np.float32))
            frames.append(ts.frame)
            if ts.last:
                ts = env.reset()
    return camera_warning(env_id, frames, kwargs)
