"""The CUDA-resident data path equals the CPU one: replay batches and the uint8 random shift.

- Replay: two ``FrameReplay`` buffers, one on the CPU and one on CUDA, same seed, same adds (pixels encode (episode,
  step); several episodes, the ring evicting): every sampled batch and every ``gather`` of given indices is equal,
  bit for bit, field by field (the sampler draws indices on the host, so both draw the same ones).
- Shift: ``random_shift`` on CUDA with the shifts it drew equals the CPU crop with those shifts, bit for bit, on
  uint8 frames at batch 256; with given shifts the two devices agree too.

Skipped without CUDA (``bench/gpu/check.sh`` runs them on the GPU machine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drq.agents.augment import random_shift, sample_shifts
from replay import FrameReplay

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu/check.sh runs it)")

FRAME, ACTION = (3, 12, 12), (2,)


def _frame(episode: int, step: int) -> np.ndarray:
    f = np.zeros(FRAME, dtype=np.uint8)
    f[0], f[1], f[2] = episode % 256, step % 256, (episode * 7 + step) % 256
    return f


def _fill(buffers: list[FrameReplay], episodes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for ep in range(episodes):
        length = int(rng.integers(3, 15))
        for t in range(length + 1):
            step = dict(frame=_frame(ep, t), action=rng.uniform(-1, 1, ACTION).astype(np.float32),
                        reward=float(rng.uniform(0, 1)), discount=float(rng.choice([1.0, 1.0, 0.0])),
                        first=t == 0, last=t == length)
            for buf in buffers:
                buf.add(**step)


def _assert_batches_equal(cpu, cuda) -> None:
    for name in cpu._fields:
        a, b = getattr(cpu, name), getattr(cuda, name)
        assert b.device.type == "cuda" and a.device.type == "cpu", name
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b.cpu()), name


@pytest.mark.parametrize("capacity", [40, 1000])  # 40: the ring evicts; 1000: it does not
def test_cuda_replay_equals_cpu_replay(capacity):
    kw = dict(capacity=capacity, frame_shape=FRAME, action_shape=ACTION, frame_stack=3, nstep=3, discount=0.9,
              seed=7)
    cpu, cuda = FrameReplay(device="cpu", **kw), FrameReplay(device="cuda", **kw)
    _fill([cpu, cuda], episodes=12)
    assert len(cpu) == len(cuda) > 0
    held = []
    for _ in range(5):
        a, b = cpu.sample(64), cuda.sample(64)
        _assert_batches_equal(a, b)
        held.append((a, b))
    for a, b in held:  # batches held by the caller are never overwritten by later samples
        _assert_batches_equal(a, b)
    g = np.arange(max(0, cpu._total - cpu.num_slots), cpu._total)
    g = g[cpu._windows(g)[1]]  # every sampleable transition
    assert len(g) == len(cpu)
    _assert_batches_equal(cpu.gather(g), cuda.gather(g))


def test_cuda_uint8_shift_equals_cpu_shift():
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (256, 9, 84, 84), dtype=torch.uint8, generator=g)
    obs_cuda = obs.cuda()
    torch.cuda.manual_seed(3)
    out_cuda = random_shift(obs_cuda, 4)
    torch.cuda.manual_seed(3)
    shifts = sample_shifts(256, 4, device="cuda")  # the draws random_shift made
    assert out_cuda.dtype == torch.uint8 and out_cuda.shape == obs.shape
    assert torch.equal(out_cuda.cpu(), random_shift(obs, 4, shifts=shifts.cpu()))
    assert len({tuple(s) for s in shifts.cpu().tolist()}) > 40  # the shifts vary across the batch
    given = torch.randint(0, 9, (256, 2), generator=g)
    assert torch.equal(random_shift(obs_cuda, 4, shifts=given.cuda()).cpu(), random_shift(obs, 4, shifts=given))
