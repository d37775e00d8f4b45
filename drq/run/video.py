"""Evaluation videos: RGB frames with a small text overlay, written as H.264 mp4 (yuv420p, plays in browsers).

A :class:`VideoRecorder` collects one episode: :meth:`VideoRecorder.record` takes the env's ``render(size)`` picture
(uint8 (size, size, 3)) plus the numbers to print on it (frame count, step reward, running return), and
:meth:`VideoRecorder.save` encodes it with imageio-ffmpeg. The file is written to a temporary name in the same folder
and renamed when complete, so a failed write (disk full) leaves no half-written mp4 behind; it then returns ``None``
after one warning instead of raising.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np

from drq.machine import stop_signals

FPS = 30


def overlay(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of ``frame`` (uint8 (H, W, 3)) with ``lines`` of text in the top-left corner (white on a dark outline)."""
    import cv2

    image = np.ascontiguousarray(frame, dtype=np.uint8).copy()
    height = image.shape[0]
    scale = max(height / 640.0, 0.3)
    thickness = 1
    line_height = int(round(22 * scale / 0.4)) if scale > 0.4 else 14
    for i, text in enumerate(lines):
        origin = (4, 4 + line_height * (i + 1) - 4)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


class VideoRecorder:
    """Collects the frames of one episode; ``enabled=False`` makes every call a no-op."""

    def __init__(self, enabled: bool = True, fps: int = FPS) -> None:
        self.enabled = enabled
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def reset(self, enabled: bool | None = None) -> None:
        if enabled is not None:
            self.enabled = enabled
        self.frames = []

    def record(self, frame: np.ndarray, frame_count: int, step_reward: float, episode_return: float,
               episode_frame: int | None = None) -> None:
        """Add one picture (uint8 (H, W, 3)) captioned with ``frame_count`` (frames of training so far),
        ``episode_frame`` (frames into this episode), the last step's reward and the running return."""
        if not self.enabled:
            return
        first = f"frame {frame_count:,}" + ("" if episode_frame is None else f" +{episode_frame}")
        lines = [first, f"reward {step_reward:6.3f}", f"return {episode_return:8.2f}"]
        self.frames.append(overlay(frame, lines))

    def save(self, path: str | Path) -> Path | None:
        """Encode the frames to ``path`` (.mp4, H.264, yuv420p). Disk full or another OS error: warn, return None."""
        if not self.enabled or not self.frames:
            return None
        return write_mp4(path, self.frames, self.fps)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int = FPS) -> Path | None:
    """Write uint8 (H, W, 3) ``frames`` as H.264 mp4 atomically; on ``OSError`` warn and return ``None``."""
    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # macro_block_size=1: keep the exact size (H.264 needs even sizes, which 84/256 are).
        with stop_signals.blocked():  # ffmpeg starts with the stop signals blocked: a group SIGTERM leaves it alone
            writer = imageio.get_writer(
                tmp, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error"
            )
        try:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))
        finally:
            writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
    except OSError as error:
        _remove_quietly(tmp)
        reason = "disk full" if error.errno == errno.ENOSPC else (str(error).strip().splitlines() or ["?"])[0]
        warnings.warn(f"could not write video {path} ({reason}); training goes on", RuntimeWarning, stacklevel=2)
        return None


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
