"""drq.envs.frames: the one resize (area interpolation) and frame stack, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from drq.envs.frames import FrameStack, to_frame


def test_an_integer_downscale_is_the_block_mean():
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (168, 252, 3), dtype=np.uint8)  # non-square: stretched to 84 x 84
    frame = to_frame(picture, 84)
    assert frame.shape == (3, 84, 84) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    blocks = picture.reshape(84, 2, 84, 3, 3).astype(np.float64).mean(axis=(1, 3))  # (84, 84, 3)
    assert np.abs(frame.transpose(1, 2, 0).astype(np.float64) - blocks).max() <= 0.5 + 1e-9


def test_a_picture_of_the_size_is_only_transposed():
    picture = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    assert np.array_equal(to_frame(picture, 16), picture.transpose(2, 0, 1))


@pytest.mark.parametrize("bad, words", [(np.zeros((8, 8, 3), np.float32), "dtype float32"),
                                        (np.zeros((8, 8), np.uint8), "shape (8, 8)"),
                                        (np.zeros((8, 8, 4), np.uint8), "shape (8, 8, 4)"),
                                        ([[0]], "got list")])
def test_a_bad_picture_is_one_line(bad, words):
    with pytest.raises(ValueError, match=None) as error:
        to_frame(bad, 8)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_stack_is_oldest_first_and_starts_with_the_first_frame_repeated():
    stack = FrameStack(3)
    frame = lambda i: np.full((3, 2, 2), i, np.uint8)  # noqa: E731
    assert stack.reset(frame(7))[:, 0, 0].tolist() == [7] * 9
    stack.push(frame(8))
    assert stack.push(frame(9))[::3, 0, 0].tolist() == [7, 8, 9]
    assert stack.push(frame(10))[::3, 0, 0].tolist() == [8, 9, 10]
    assert stack.reset(frame(1))[::3, 0, 0].tolist() == [1, 1, 1]
    with pytest.raises(RuntimeError, match="before reset"):
        FrameStack(2).push(frame(0))
