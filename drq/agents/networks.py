"""Networks shared by the DrQ-v2 and SAC agents (DrQ-v2's architecture and initialisation).

- ``Encoder``: uint8 frames ``(B, 3k, H, W)`` -> features ``(B, 32 * h * w)`` (``32 * 35 * 35 = 39200`` at 84x84).
- ``Critic``: features + action -> twin Q values ``(B, 1)`` each, through its own Linear -> LayerNorm -> tanh trunk.
- ``DrQV2Actor``: features -> ``ClippedNormal(tanh(mu), std)`` with the std given (scheduled).
- ``SACActor``: features -> ``TanhNormal(mu, exp(log_std))`` with ``log_std`` squashed into ``log_std_bounds``.
"""

from __future__ import annotations

import torch
from torch import nn

from drq.agents.distributions import ClippedNormal, TanhNormal

__all__ = ["Encoder", "Critic", "DrQV2Actor", "SACActor", "orthogonal_init", "conv_output_hw"]


def orthogonal_init(module: nn.Module) -> None:
    """DrQ-v2's init: orthogonal weights (gain sqrt(2) for convs, 1 for linears), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


def conv_output_hw(h: int, w: int) -> tuple[int, int]:
    """Spatial size after the encoder: 3x3 stride 2, then three 3x3 stride 1 convs, no padding."""
    h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    return h - 6, w - 6


class Encoder(nn.Module):
    """Four 3x3 convs with 32 channels (the first with stride 2), ReLU after each; input ``obs / 255 - 0.5``.

    Args:
        obs_shape: ``(C, H, W)`` with ``C = 3 * frame_stack`` and ``H, W >= 15`` (``image_size``, checked by
            ``drq.config.schema``).
        channels_last: run the convs in NHWC memory layout (faster with oneDNN on CPU and tensor cores on GPU);
            the numbers and the flattening order ((H, W, C)) are the same either way.

    ``forward(obs)``: ``obs`` uint8 ``(B, C, H, W)`` (or float in [0, 255]) -> ``(B, repr_dim)`` float.
    The normalisation ``obs / 255 - 0.5`` is folded into the first conv (weight / 255, bias - 0.5 * sum(weight)): the
    same function of the same parameters, one fewer pass over the largest tensor.
    """

    def __init__(self, obs_shape: tuple[int, int, int], channels_last: bool = True):
        super().__init__()
        c, h, w = obs_shape
        out_h, out_w = conv_output_hw(h, w)
        self.obs_shape = tuple(obs_shape)
        self.channels_last = bool(channels_last)
        self.repr_dim = 32 * out_h * out_w
        self.conv1 = nn.Conv2d(c, 32, 3, stride=2)
        # in-place ReLUs: a conv's backward needs its input, not its output, so overwriting the output is safe
        self.convs = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(inplace=True))
        self.apply(orthogonal_init)
        if self.channels_last:
            self.convs.to(memory_format=torch.channels_last)  # conv1: see forward

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(obs.device.type) if torch.is_autocast_enabled(obs.device.type) \
            else self.conv1.weight.dtype
        # The first conv (9 input channels) runs NHWC only in fp32: on CPU its bf16 NHWC weight-gradient (oneDNN,
        # torch 2.13) intermittently took 0.5-2 s instead of ~40 ms, and the uint8 -> NHWC conversion costs 8x more.
        first_nhwc = self.channels_last and dtype == torch.float32
        memory_format = torch.channels_last if first_nhwc else torch.contiguous_format
        # uint8 values are exact in bf16 (8 significant bits). The layout change happens on the uint8 frames (a quarter
        # of the bytes of float ones), then the conversion keeps it.
        x = obs.contiguous(memory_format=memory_format).to(dtype=dtype)
        weight = (self.conv1.weight / 255.0).contiguous(memory_format=memory_format)
        bias = self.conv1.bias - 0.5 * self.conv1.weight.sum(dim=(1, 2, 3))
        h = nn.functional.conv2d(x, weight, bias, stride=2)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.convs(h)
        # flattened in (H, W, C) order: free for channels_last activations (DrQ-v2 flattens (C, H, W); the order is a
        # fixed permutation of the trunk's inputs, so it is the same model)
        return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)


class OutputLinear(nn.Linear):
    """A Linear output head that always computes in float32, also under bf16 autocast.

    bf16 keeps 8 significant bits: a Q value of 150 would come out rounded to a multiple of 1.0, coarser than many TD
    errors, and a pre-tanh mean to ~0.4%. The head is (hidden_dim x out_dim), so fp32 costs nothing measurable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                         nn.ReLU(), OutputLinear(hidden_dim, out_dim))


def _trunk(repr_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class Critic(nn.Module):
    """Twin Q: trunk ``Linear(repr_dim, feature_dim) -> LayerNorm -> tanh``, then two MLPs on ``[h, action]`` with two
    hidden layers of ``hidden_dim`` (ReLU).

    ``forward(features (B, repr_dim), action (B, A)) -> (q1 (B, 1), q2 (B, 1))``.
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int = 50, hidden_dim: int = 1024):
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.q1 = _mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = _mlp(feature_dim + action_dim, hidden_dim, 1)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(features)
        h_action = torch.cat([h, action.to(h.dtype)], dim=-1)
        return self.q1(h_action), self.q2(h_action)


class DrQV2Actor(nn.Module):
    """DrQ-v2's deterministic actor with scheduled exploration noise.

    ``forward(features (B, repr_dim), std: float) -> ClippedNormal(tanh(mu), std)`` in float32, where ``mu`` is the
    pre-tanh mean (kept as ``dist.pre_tanh_mean`` for the saturation metrics).
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int = 50, hidden_dim: int = 1024):
        super().__init__()
        self.trunk = _trunk(repr_dim, feature_dim)
        self.policy = _mlp(feature_dim, hidden_dim, action_dim)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor, std: float) -> ClippedNormal:
        pre_tanh_mean = self.policy(self.trunk(features)).float()
        dist = ClippedNormal(torch.tanh(pre_tanh_mean), std, validate_args=False)
        dist.pre_tanh_mean = pre_tanh_mean
        return dist

    def mean_action(self, features: torch.Tensor) -> torch.Tensor:
        """The evaluation action ``tanh(mu)`` ``(B, A)`` float32, the same operations as ``forward(features, std).mean``
        without building the distribution: what a deployed policy computes (``drq.policy``, ``drq.export``)."""
        return torch.tanh(self.policy(self.trunk(features)).float())


class SACActor(nn.Module):
    """SAC's tanh-Gaussian actor: ``mu`` and ``log_std`` from an MLP on the trunk features, with
    ``log_std = lo + (hi - lo) * (tanh(raw) + 1) / 2`` in ``log_std_bounds = (lo, hi)`` (default ``(-10, 2)``).

    ``forward(features (B, repr_dim)) -> TanhNormal(mu, exp(log_std))`` in float32.
    """

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int = 50, hidden_dim: int = 1024,
                 log_std_bounds: tuple[float, float] = (-10.0, 2.0)):
        super().__init__()
        self.log_std_bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))
        self.trunk = _trunk(repr_dim, feature_dim)
        self.policy = _mlp(feature_dim, hidden_dim, 2 * action_dim)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor) -> TanhNormal:
        mu, raw_log_std = self.policy(self.trunk(features)).float().chunk(2, dim=-1)
        lo, hi = self.log_std_bounds
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw_log_std) + 1.0)
        return TanhNormal(mu, log_std.exp(), validate_args=False)

    def mean_action(self, features: torch.Tensor) -> torch.Tensor:
        """The evaluation action ``tanh(mu)`` ``(B, A)`` float32, the same operations as ``forward(features).mean``
        without the std head's squashing: what a deployed policy computes (``drq.policy``, ``drq.export``)."""
        mu, _ = self.policy(self.trunk(features)).float().chunk(2, dim=-1)
        return torch.tanh(mu)
