"""random_shift (integer crop on uint8) against DrQ-v2's grid_sample formulation."""

import pytest
import torch
import torch.nn.functional as F

from drq.agents.augment import random_shift, sample_shifts


def grid_sample_shift(x: torch.Tensor, shift: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug with a given integer shift (B, 2) = (dx, dy) in [0, 2 pad], on float frames."""
    n, c, h, w = x.shape
    assert h == w
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, dtype=x.dtype)[:h]  # pixel centres
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    grid = base_grid + shift.to(x.dtype).view(n, 1, 1, 2) * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def test_all_81_shifts_match_grid_sample_reference():
    torch.manual_seed(0)
    shifts = torch.stack(torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij"), -1).reshape(81, 2)
    frames = torch.randint(0, 256, (81, 9, 20, 20), dtype=torch.uint8)
    ours = random_shift(frames, pad=4, shifts=shifts)
    assert ours.dtype == torch.uint8 and ours.shape == frames.shape
    ref = grid_sample_shift(frames.double(), shifts)
    assert (ref - ref.round()).abs().max() < 1e-6  # integer shifts land on pixel centres
    assert torch.equal(ours, ref.round().to(torch.uint8))


def test_84x84_stacked_frames_share_one_shift_per_sample():
    frames = torch.randint(0, 256, (6, 9, 84, 84), dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [8, 0], [3, 6]])
    ours = random_shift(frames, shifts=shifts)
    assert torch.equal(ours, grid_sample_shift(frames.float(), shifts).round().to(torch.uint8))
    assert torch.equal(ours[2], frames[2])  # (pad, pad) is the identity
    # pixel (i, j) of the output comes from (clamp(i + dy - 4), clamp(j + dx - 4)) in every channel
    b, dx, dy = 5, 3, 6
    rows = (torch.arange(84) + dy - 4).clamp(0, 83)
    cols = (torch.arange(84) + dx - 4).clamp(0, 83)
    assert torch.equal(ours[b], frames[b][:, rows][:, :, cols])


def test_random_shifts_are_independent_and_in_range():
    torch.manual_seed(0)
    shifts = sample_shifts(10_000, pad=4)
    assert shifts.min() == 0 and shifts.max() == 8
    assert len(torch.unique(shifts[:, 0] * 9 + shifts[:, 1])) == 81
    # an image whose pixels encode their own coordinates reveals the shift each sample got
    h = 84
    coords = (torch.arange(h).view(h, 1) * 0 + torch.arange(h).view(1, h)).to(torch.uint8)
    frames = coords.expand(64, 3, h, h).contiguous()
    out = random_shift(frames)
    dx = out[:, 0, 42, 42].long() - 42
    assert torch.equal(out[:, 1], out[:, 0]) and torch.equal(out[:, 2], out[:, 0])
    assert dx.min() >= -4 and dx.max() <= 4 and len(torch.unique(dx)) > 3


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(9, 84, 84\)"):
        random_shift(torch.zeros(9, 84, 84, dtype=torch.uint8))
    with pytest.raises(ValueError, match="-1"):
        random_shift(torch.zeros(2, 9, 84, 84, dtype=torch.uint8), pad=-1)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        random_shift(torch.zeros(2, 9, 84, 84, dtype=torch.uint8), shifts=torch.zeros(3, 2, dtype=torch.long))
