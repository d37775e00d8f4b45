"""FrameReplay's recycled output memory (``_output_buffer``): reused once nothing holds a batch (the speed it exists
for), never while anything derived from the batch is alive (tests/test_replay.py checks held batches and views)."""

from __future__ import annotations

import gc

import numpy as np
import torch

from replay import FrameReplay


def filled(seed: int = 0) -> FrameReplay:
    rng = np.random.default_rng(seed)
    buf = FrameReplay(200, (3, 4, 4), (2,), frame_stack=3, nstep=2, seed=seed)
    for t in range(150):
        frame = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
        buf.add(frame, np.zeros(2, np.float32), 1.0, 1.0, first=t % 30 == 0, last=t % 30 == 29)
    return buf


def test_memory_is_reused_once_the_batch_is_gone():
    buf = filled()
    first = buf.sample(16).obs.data_ptr()
    gc.collect()
    assert [buf.sample(16).obs.data_ptr() for _ in range(3)] == [first] * 3  # nothing held: the same memory each time
    other_size = buf.sample(8).obs.data_ptr()  # another batch size gets memory of its own
    assert other_size != first


def test_numpy_of_a_view_and_a_slice_of_a_view_keep_their_memory():
    buf = filled(1)
    as_numpy = buf.sample(16).next_obs[2].numpy()  # numpy array of a view: the storage stays alive through it
    sliced = buf.sample(16).obs[1:3, :3]
    kept_numpy, kept_slice = as_numpy.copy(), sliced.clone()
    for _ in range(5):
        batch = buf.sample(16)
        assert batch.obs.data_ptr() != sliced.data_ptr()
    assert np.array_equal(as_numpy, kept_numpy) and torch.equal(sliced, kept_slice)
    del as_numpy, sliced, batch
    gc.collect()
    assert len({buf.sample(16).obs.data_ptr() for _ in range(3)}) == 1  # all released: recycling resumes
