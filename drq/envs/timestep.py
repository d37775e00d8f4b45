"""The one time-step type every environment of drq returns, and the one rule for where an episode ends.

No numpy, GL or simulator import: the DMC env (:mod:`drq.envs.pixels`), the env worker (:mod:`drq.envs.worker`), the
trainer and the evaluation all read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, eq=False)
class TimeStep:
    """One agent step.

    observation: uint8 (3k, H, W), channels-first, oldest frame first, newest last.
    action: float32 (A,), in [-1, 1], the action that led here (zeros on the first step).
    reward: sum of the rewards of the action-repeat frames (0.0 on the first step).
    discount: product of the frames' discounts (1.0 on the first step): 0.0 when the episode *terminated* (no future:
        the replay never bootstraps from it), 1.0 when it was only cut (a time limit: it bootstraps).
    first / last: episode start / end (``last`` for a termination and for a time limit alike).
    """

    observation: Any  # np.ndarray uint8 (3k, H, W)
    action: Any  # np.ndarray float32 (A,)
    reward: float
    discount: float
    first: bool
    last: bool

    @property
    def frame(self) -> Any:
        """The newest frame, uint8 (3, H, W)."""
        return self.observation[-3:]


def episode_over(ts: Any, frames: int, max_episode_frames: int | None) -> bool:
    """Whether an episode ends at ``ts``: the task ended it, or it has run ``max_episode_frames`` frames (``frames``
    so far; ``None``: no limit of our own). The one rule for training and evaluation episodes."""
    return bool(ts.last) or (max_episode_frames is not None and frames >= max_episode_frames)
