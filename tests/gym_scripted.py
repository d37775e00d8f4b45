"""Gymnasium envs for the tests, built by drq as entry points (``gym.id=gym_scripted:ScriptedEnds``; tests/ is on
sys.path under pytest, and worker processes inherit it).

``ScriptedEnds``: episodes whose ends fall at known frames. Episode ``e`` (the env's ``e``-th reset) follows
``SCRIPT[e % len(SCRIPT)] = (end, length)``: it terminates (``'term'``) or is truncated (``'trunc'``) at frame
``length``, or never ends by itself (``'none'``: the trainer's ``max_episode_frames`` cuts it). The reward of frame
``f`` (1-based) of episode ``e`` is ``reward(e, f) = 100 e + f``. The observation is the picture, uint8 (16, 16, 3):
channel 0 holds ``e mod 256``, channel 1 the frame index ``f`` (0 after reset), channel 2 the last action received,
quantised onto 0..255 over the action space ``[-2, 6]``.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

SIDE = 16
ACTION_LOW, ACTION_HIGH = -2.0, 6.0
# every end kind at lengths 1..18 frames: with action repeat 3, ends inside a repeat (length % 3 = 1, 2) and at its end
# (0), episodes of 1..6 agent steps (every n-step offset for n = 3, and shorter than n); then two episodes cut by
# max_episode_frames=30 (one the env would end later, one it terminates exactly there)
SCRIPT: tuple[tuple[str, int], ...] = tuple((end, length) for length in range(1, 19) for end in ("term", "trunc")) + (
    ("none", 0), ("term", 30), ("trunc", 31))


def reward(episode: int, frame: int) -> float:
    return float(100 * episode + frame)


def action_code(env_action: float) -> int:
    return int(round((env_action - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW) * 255))


class ScriptedEnds(gymnasium.Env):
    """See the module docstring."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, shape=(SIDE, SIDE, 3), dtype=np.uint8)
        self.episode, self.frame, self.code = -1, 0, 0

    def _picture(self) -> np.ndarray:
        picture = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
        picture[..., 0], picture[..., 1], picture[..., 2] = self.episode % 256, self.frame, self.code
        return picture

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.frame, self.code = self.episode + 1, 0, 0
        return self._picture(), {}

    def step(self, action):
        end, length = SCRIPT[self.episode % len(SCRIPT)]
        self.frame += 1
        self.code = action_code(float(action[0]))
        at_end = end != "none" and self.frame == length
        terminated, truncated = at_end and end == "term", at_end and end == "trunc"
        return self._picture(), reward(self.episode, self.frame), terminated, truncated, {}


class DiscreteActions(ScriptedEnds):
    """CartPole's kind of action space, which drq refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Discrete(3)


class DictPictures(ScriptedEnds):
    """The picture under the key ``'camera'`` of a Dict observation, beside a state vector (ignored by drq)."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Dict({"camera": spaces.Box(0, 255, (SIDE, SIDE, 3), np.uint8),
                                              "state": spaces.Box(-1, 1, (2,), np.float32)})  # fmt: skip

    def _picture(self):
        return {"camera": super()._picture(), "state": np.zeros(2, np.float32)}


class FloatPictures(ScriptedEnds):
    """An image observation of the wrong dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(0, 1, (SIDE, SIDE, 3), np.float32)
