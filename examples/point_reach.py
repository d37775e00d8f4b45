"""A point that must reach a target drawn on the image: a complete Gymnasium environment of your own, pure numpy.

    python train.py task=gym gym.id=examples.point_reach:PointReach

The arena is the square [-1, 1]^2, drawn at ``size`` x ``size`` pixels: the target a green disc, the point a white dot
on a dark floor. The agent sees only the picture (``render()``); the observation vector (point and target positions)
is there for a state-based agent and is not used by drq.

- action: the point's velocity (vx, vy) in arena units per frame, a ``Box`` in [-max_speed, max_speed]^2 (drq's agent
  acts in [-1, 1]; the trainer maps that onto these bounds);
- reward: minus the distance to the target, every frame, so a faster reach earns a higher return;
- terminated: the point is within ``radius`` of the target (success: there is no future to bootstrap from);
- truncated: ``max_episode_steps`` frames went by without reaching it (a time limit: the future is only cut off).

All randomness comes from ``self.np_random``, which ``reset(seed=...)`` seeds (Gymnasium's rule, and what makes a
drq run with a fixed seed repeat exactly).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class PointReach(gymnasium.Env):
    """Reach the green disc with the white dot. ``size``: the picture's side in pixels; ``max_episode_steps``: the
    time limit in frames; ``max_speed``: arena units per frame; ``radius``: the target's radius in arena units."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, size: int = 84, max_episode_steps: int = 100,
                 max_speed: float = 0.1, radius: float = 0.12) -> None:
        self.render_mode, self.size = render_mode, int(size)
        self.max_episode_steps, self.radius = int(max_episode_steps), float(radius)
        self.action_space = spaces.Box(-max_speed, max_speed, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        centres = (np.arange(self.size) + 0.5) / self.size * 2.0 - 1.0  # pixel centres in arena units
        self._x, self._y = np.meshgrid(centres, -centres)  # row 0 is the top of the arena (y = +1)
        self.point = self.target = np.zeros(2)
        self.steps = 0

    def _observation(self) -> np.ndarray:
        return np.concatenate([self.point, self.target]).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)  # seeds self.np_random
        self.point = self.np_random.uniform(-0.8, 0.8, 2)
        self.target = self.np_random.uniform(-0.8, 0.8, 2)
        while np.linalg.norm(self.point - self.target) < 3 * self.radius:  # never reached at the start
            self.target = self.np_random.uniform(-0.8, 0.8, 2)
        self.steps = 0
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        low, high = self.action_space.low, self.action_space.high
        self.point = np.clip(self.point + np.clip(action, low, high), -1.0, 1.0)
        self.steps += 1
        distance = float(np.linalg.norm(self.point - self.target))
        terminated = distance < self.radius
        truncated = self.steps >= self.max_episode_steps and not terminated
        return self._observation(), -distance, terminated, truncated, {"distance": distance}

    def render(self) -> np.ndarray:
        """uint8 (size, size, 3): the floor, the target (green disc) and the point (white dot)."""
        picture = np.full((self.size, self.size, 3), 40, dtype=np.uint8)
        for (cx, cy), r, colour in ((self.target, self.radius, (60, 200, 80)), (self.point, 0.06, (255, 255, 255))):
            picture[(self._x - cx) ** 2 + (self._y - cy) ** 2 <= r * r] = colour
        return picture
