"""Evaluation videos: H.264 / yuv420p mp4 that decodes (ffmpeg, via imageio) to the frames that were written."""

from __future__ import annotations

import errno

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import pytest

from drq.run.video import VideoRecorder, overlay, write_mp4


def test_mp4_is_h264_yuv420p_and_decodes_to_the_written_frames(tmp_path):
    recorder = VideoRecorder()
    n = 20
    for i in range(n):  # the step index is the gray level (12 * i), so order and count can be read back
        recorder.record(np.full((256, 256, 3), 12 * i, np.uint8), frame_count=8 * i, step_reward=0.5,
                        episode_return=0.5 * i, episode_frame=8 * i)  # fmt: skip
    path = recorder.save(tmp_path / "videos" / "eval_0.mp4")
    assert path == tmp_path / "videos" / "eval_0.mp4"
    meta = next(imageio_ffmpeg.read_frames(str(path)))
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["size"] == (256, 256)
    frames = [f for f in imageio.get_reader(path)]  # (list() asks the reader for a length it does not know)
    assert len(frames) == n and all(f.shape == (256, 256, 3) for f in frames)
    gray = [float(f[128:, 128:].mean()) for f in frames]  # below/right of the overlay text
    assert gray == pytest.approx([12.0 * i for i in range(n)], abs=3.0)
    assert not list((tmp_path / "videos").glob(".*tmp*"))


def test_overlay_writes_text_only_in_the_corner():
    frame = np.zeros((256, 256, 3), np.uint8)
    out = overlay(frame, ["frame 1,000 +8", "reward  0.500", "return   12.00"])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[:60, :128].max() == 255  # white text in the top-left corner
    assert out[80:, :].max() == 0 and out[:, 160:].max() == 0  # nothing elsewhere
    assert frame.max() == 0  # the input is not modified


def test_disabled_recorder_writes_nothing(tmp_path):
    recorder = VideoRecorder(enabled=False)
    recorder.record(np.zeros((64, 64, 3), np.uint8), 0, 0.0, 0.0)
    assert recorder.save(tmp_path / "x.mp4") is None and not (tmp_path / "x.mp4").exists()


def test_disk_full_warns_and_leaves_no_file(tmp_path, monkeypatch):
    class FullWriter:
        def append_data(self, frame):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(imageio, "get_writer", lambda *a, **k: FullWriter())
    with pytest.warns(RuntimeWarning, match="disk full"):
        assert write_mp4(tmp_path / "eval_0.mp4", [np.zeros((64, 64, 3), np.uint8)]) is None
    assert list(tmp_path.iterdir()) == []
