"""Pictures into observations: one resize and one frame stack for every env and for a policy outside the trainer.

A picture is uint8 ``(H, W, 3)`` (channels-last, as renderers and cameras give it); a frame is uint8 ``(3, S, S)``
(channels-first, ``S = image_size``); an observation is ``k`` frames stacked on the channel axis, oldest first:
uint8 ``(3k, S, S)``. The DMC env renders at ``S`` directly; a Gymnasium env's picture, or a robot's camera image,
is resized here with OpenCV's area interpolation. A policy loaded outside the trainer uses the same two pieces, so
its observations equal the trainer's (tests check it).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

CHANNEL_ORDER = "RGB"
"""The channel order of every picture, frame and observation (MuJoCo and Gymnasium's ``rgb_array`` render RGB; an
OpenCV camera image is BGR: ``picture[..., ::-1]`` first)."""
FRAME_ORDER = "oldest first"
"""The order of the ``k`` frames stacked in an observation: ``observation[-3:]`` is the newest frame."""


def picture_problem(picture: Any, what: str = "picture") -> str | None:
    """What is wrong with ``picture`` as a uint8 ``(H, W, 3)`` image, in words, or None."""
    if not isinstance(picture, np.ndarray):
        return f"{what} must be a numpy array, uint8 (H, W, 3); got {type(picture).__name__}"
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.shape[0] < 1 or picture.shape[1] < 1:
        return f"{what} must be uint8 (H, W, 3) (RGB, channels last); got shape {picture.shape}"
    if picture.dtype != np.uint8:
        return f"{what} must be uint8 (H, W, 3); got dtype {picture.dtype}"
    return None


def to_frame(picture: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> uint8 ``(3, size, size)``: resized with ``cv2.INTER_AREA`` when ``(H, W)`` is not
    ``(size, size)`` (a non-square picture is stretched, never cropped), then channels first. ValueError, naming the
    problem, for anything but a uint8 (H, W, 3) array."""
    problem = picture_problem(picture)
    if problem:
        raise ValueError(problem)
    if picture.shape[:2] != (size, size):
        import cv2  # only when a resize is needed: the DMC env renders at the size it wants

        picture = cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(picture.transpose(2, 0, 1))


class FrameStack:
    """The last ``k`` frames, oldest first; :meth:`reset` fills all ``k`` slots with an episode's first frame."""

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=self.k)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        """Start an episode with ``frame`` (3, S, S); returns the observation (3k, S, S)."""
        self._frames.clear()
        for _ in range(self.k):
            self._frames.append(frame)
        return self.observation()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Add the newest frame; returns the observation (3k, S, S)."""
        if not self._frames:
            raise RuntimeError("FrameStack.push() before reset(): an episode starts with reset(first_frame)")
        self._frames.append(frame)
        return self.observation()

    def observation(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=0)
