"""DrQ random shift as an integer crop on uint8 frames.

DrQ-v2 pads the float observation by ``pad`` pixels (replicate), then ``grid_sample``s it on the base grid of the
original pixel centres shifted by an integer number of pixels per sample (``shift * 2 / (H + 2 pad)`` in normalised
coordinates, bilinear, ``align_corners=False``). Because the shift is a whole number of pixels, every sample point
lands exactly on a pixel centre and the bilinear weights are 0/1: the result is a plain crop of the padded image.
Cropping the uint8 frames before the float conversion gives the same numbers ~20x cheaper (no float copy, no
interpolation); tests/test_augment.py checks all 81 shifts against a grid_sample reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_shift", "sample_shifts"]


def sample_shifts(batch_size: int, pad: int = 4, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent integer shifts ``(B, 2)`` as ``(dx, dy)`` in ``[0, 2 pad]`` (``pad`` = no displacement)."""
    return torch.randint(0, 2 * pad + 1, (batch_size, 2), device=device, generator=generator)


def random_shift(obs: torch.Tensor, pad: int = 4, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Replicate-pad ``obs`` by ``pad`` and crop back to ``(H, W)`` at an independent integer offset per sample.

    Args:
        obs: ``(B, C, H, W)`` frames, any dtype (uint8 from the replay in practice); all ``C`` channels of a sample
            (the stacked frames) get the same shift.
        pad: padding in pixels (DrQ/DrQ-v2: 4).
        shifts: optional ``(B, 2)`` integer ``(dx, dy)`` in ``[0, 2 pad]``, the top-left corner of the crop in the
            padded image (``dx`` along W, ``dy`` along H); random if omitted.

    Returns:
        ``(B, C, H, W)``, same dtype and device: ``out[b, c, i, j] = obs[b, c, clamp(i + dy_b - pad), clamp(j + dx_b
        - pad)]``.
    """
    if obs.dim() != 4:
        raise ValueError(f"random_shift expects (B, C, H, W) frames, got shape {tuple(obs.shape)}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"random_shift: pad must be a non-negative int, got {pad!r}")
    b, c, h, w = obs.shape
    if shifts is None:
        shifts = sample_shifts(b, pad, device=obs.device)
    elif tuple(shifts.shape) != (b, 2):
        raise ValueError(f"random_shift: shifts must have shape ({b}, 2), got {tuple(shifts.shape)}")
    if pad == 0:
        return obs.clone()
    padded = F.pad(obs, (pad, pad, pad, pad), mode="replicate")
    s_b, s_c, s_h, s_w = padded.stride()
    # windows[b, dy, dx] is the (C, H, W) crop whose top-left corner is (dy, dx): a view, no copy.
    windows = padded.as_strided((b, 2 * pad + 1, 2 * pad + 1, c, h, w), (s_b, s_h, s_w, s_c, s_h, s_w))
    idx = torch.arange(b, device=obs.device)
    return windows[idx, shifts[:, 1], shifts[:, 0]]
