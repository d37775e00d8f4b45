"""DrQ-v2's and DrQ's (SAC) updates written plainly, the way their papers' code writes them, independent of ``drq``.

- ``DrQV2Reference``: facebookresearch/drqv2 (``drqv2.py``): encoder, actor, twin critic and target critic; n-step
  target with clipped target-policy noise, ``mse(Q1, y) + mse(Q2, y)``, the actor on detached features with a
  straight-through clipped action, a soft update of the target critic every update.
- ``DrQReference``: denisyarats/drq (``drq.py``): obs and obs_aug, next_obs and next_obs_aug (``K = M = 2``), the
  target averaged over the two next-observation shifts, DrQ's four-term critic loss, the actor and temperature every
  ``actor_update_every`` steps, the targets (critic, and with ``target_encoder`` the conv encoder) every
  ``target_update_every`` steps. ``target_encoder=False`` swaps in DrQ-v2's layout (next observations through the
  online encoder, the actor on the critic step's features).

Written as the papers' code does: float frames, replicate-pad and crop one sample at a time, ``/255 - 0.5`` as its own
step, NCHW convolutions flattened in (C, H, W) order, separate default Adam optimisers (not fused), ``torch.min``
targets, ``torch.distributions``' ``TanhTransform`` for SAC's policy, a per-parameter ``copy_`` soft update and
``.item()``-free metrics (tensors; the benches read them as the papers log them). Networks: the papers' layer sizes
(4 convs of 32 channels, a ``Linear -> LayerNorm -> tanh`` trunk of ``feature_dim``, MLPs of two ``hidden_dim``
layers) with PyTorch's default initialisation: tests/test_transcription.py copies our agent's weights in.

Random numbers: ``update(batch, step, draws)`` takes them by the names of the agents' ``noise`` seam
(``drq.agents.core.NoiseFn``: ``obs_shift``, ``next_obs_shift``, ``next_action_eps``, ``actor_eps``) so that a test
can feed both the same; without ``draws`` they come from torch's generator on the batch's device.
Shapes: a batch holds uint8 ``obs``/``next_obs`` ``(B, C, H, W)``, ``action (B, A)``, ``reward``/``discount``
``(B, 1)``; ``step`` counts agent steps.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

__all__ = ["PAD", "DrQV2Reference", "DrQReference", "shift_crop", "RefConvs", "RefCritic", "RefActor"]

PAD = 4  # DrQ / DrQ-v2: replicate-pad 4 pixels, crop back


def shift_crop(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Float frames ``(n, C, H, W)``: replicate-pad by ``PAD``, crop sample ``i`` at its corner ``shifts[i] = (dx,
    dy)`` in ``[0, 2 PAD]`` (what DrQ-v2's ``grid_sample`` does at an integer shift, and DrQ's random crop)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="replicate")
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dx, dy) in enumerate(shifts.tolist())])


class RefConvs(nn.Module):
    """``obs / 255 - 0.5``, four 3x3 convs of 32 channels (the first with stride 2) with ReLU, flattened (C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, 32, 3, stride=2), nn.Conv2d(32, 32, 3, stride=1),
                                    nn.Conv2d(32, 32, 3, stride=1), nn.Conv2d(32, 32, 3, stride=1)])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = obs / 255.0 - 0.5
        for conv in self.convs:
            h = torch.relu(conv(h))
        return h.reshape(h.shape[0], -1)


def repr_dim(obs_shape: tuple[int, int, int]) -> int:
    """The flattened conv output size for frames ``(C, H, W)``: 32 channels of ``(H - 3) // 2 - 5`` squared."""
    _, h, w = obs_shape
    return 32 * ((h - 3) // 2 + 1 - 6) * ((w - 3) // 2 + 1 - 6)


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


def trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class RefCritic(nn.Module):
    """Twin Q on ``[trunk(h), action]``: ``(q1 (B, 1), q2 (B, 1))``."""

    def __init__(self, in_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim)
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 1)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x), self.q2(x)


class RefActor(nn.Module):
    """``policy(trunk(h))``: ``(B, out)`` (DrQ-v2: the pre-tanh mean; DrQ: mean and raw log std)."""

    def __init__(self, in_dim: int, out: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk, self.policy = trunk(in_dim, feature_dim), mlp(feature_dim, hidden_dim, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(h))


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """The papers' optimiser: default (per-parameter, not fused) Adam."""
    return torch.optim.Adam(params, lr=lr, foreach=False, fused=False)


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """The papers' soft update, one parameter at a time."""
    with torch.no_grad():
        for p, tp in zip(net.parameters(), target.parameters()):
            tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


def _draws(draws: Mapping[str, torch.Tensor] | None, device: torch.device) -> Any:
    """``take(name, shape, kind)``: ``draws[name]`` (on ``device``), or a fresh draw from torch's generator."""
    def take(name: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        if draws is not None:
            return draws[name].to(device)
        if kind == "shift":
            return torch.randint(0, 2 * PAD + 1, shape, device=device)
        return torch.randn(shape, device=device)

    return take


class DrQV2Reference:
    """facebookresearch/drqv2's ``DrQV2Agent.update`` at a fixed exploration std ``std`` (its schedule's value)."""

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, feature_dim: int = 50,
                 hidden_dim: int = 1024, lr: float = 1e-4, tau: float = 0.01, std: float = 0.2,
                 stddev_clip: float = 0.3, device: str | torch.device = "cpu"):
        n = repr_dim(obs_shape)
        self.encoder = RefConvs(obs_shape[0]).to(device)
        self.critic = RefCritic(n, action_dim, feature_dim, hidden_dim).to(device)
        self.critic_target = RefCritic(n, action_dim, feature_dim, hidden_dim).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor = RefActor(n, action_dim, feature_dim, hidden_dim).to(device)
        self.action_dim, self.tau, self.std, self.stddev_clip = action_dim, tau, std, stddev_clip
        self.encoder_opt, self.critic_opt = adam(self.encoder.parameters(), lr), adam(self.critic.parameters(), lr)
        self.actor_opt = adam(self.actor.parameters(), lr)
        self.optimizers = [self.encoder_opt, self.critic_opt, self.actor_opt]

    def sample(self, mu: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """drqv2's ``TruncatedNormal.sample(clip)``: clipped noise, then the action clamped with a straight-through."""
        noise = torch.clamp(eps * self.std, -self.stddev_clip, self.stddev_clip)
        x = mu + noise
        clamped = torch.clamp(x, -1.0 + 1e-6, 1.0 - 1e-6)
        return x - x.detach() + clamped.detach()

    def update(self, batch: Any, step: int, draws: Mapping[str, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        take, b = _draws(draws, batch.obs.device), batch.obs.shape[0]
        obs = shift_crop(batch.obs.float(), take("obs_shift", (b, 2), "shift"))
        next_obs = shift_crop(batch.next_obs.float(), take("next_obs_shift", (b, 2), "shift"))
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        # update_critic
        with torch.no_grad():
            mu = torch.tanh(self.actor(next_obs))
            next_action = self.sample(mu, take("next_action_eps", (b, self.action_dim), "eps"))
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_v = torch.min(target_q1, target_q2)
            target_q = batch.reward + batch.discount * target_v
        q1, q2 = self.critic(obs, batch.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        # update_actor
        obs = obs.detach()
        action = self.sample(torch.tanh(self.actor(obs)), take("actor_eps", (b, self.action_dim), "eps"))
        q1_pi, q2_pi = self.critic(obs, action)
        actor_loss = -torch.min(q1_pi, q2_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        # update_critic_target
        soft_update(self.critic, self.critic_target, self.tau)
        return {"critic_loss": critic_loss, "critic_q1": q1.mean(), "critic_q2": q2.mean(),
                "critic_target_q": target_q.mean(), "batch_reward": batch.reward.mean(), "actor_loss": actor_loss}


class DrQReference:
    """denisyarats/drq's ``DRQAgent.update``. ``critic`` is DrQ's critic minus its conv encoder (the trunk is DrQ's
    encoder head), the actor's own head is its trunk, and the convs are shared (DrQ ties the actor's convs to the
    critic's). ``target_encoder=False``: DrQ-v2's layout (see the module docstring)."""

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, feature_dim: int = 50,
                 hidden_dim: int = 1024, lr: float = 1e-3, tau: float = 0.01, init_temperature: float = 0.1,
                 target_encoder: bool = True, actor_update_every: int = 2, target_update_every: int = 2,
                 device: str | torch.device = "cpu"):
        n = repr_dim(obs_shape)
        self.encoder = RefConvs(obs_shape[0]).to(device)
        self.critic = RefCritic(n, action_dim, feature_dim, hidden_dim).to(device)
        self.actor = RefActor(n, 2 * action_dim, feature_dim, hidden_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.target_encoder = copy.deepcopy(self.encoder) if target_encoder else None
        self.action_dim, self.tau, self.target_entropy = action_dim, tau, -action_dim
        self.actor_update_every, self.target_update_every = actor_update_every, target_update_every
        self.log_alpha = torch.tensor(math.log(init_temperature), device=device, requires_grad=True)
        self.critic_opt = adam(list(self.encoder.parameters()) + list(self.critic.parameters()), lr)
        self.actor_opt = adam(self.actor.parameters(), lr)
        self.log_alpha_opt = adam([self.log_alpha], lr)
        self.optimizers = [self.critic_opt, self.actor_opt, self.log_alpha_opt]

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, h: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DrQ's ``SquashedNormal``: ``rsample`` with the given noise, ``log_prob`` summed over the action."""
        mu, log_std = self.actor(h).chunk(2, dim=-1)
        log_std = -10 + 0.5 * (2 - (-10)) * (torch.tanh(log_std) + 1)
        tanh = TanhTransform(cache_size=1)
        dist = TransformedDistribution(Normal(mu, log_std.exp()), [tanh])
        action = tanh(mu + log_std.exp() * eps)  # caches the pre-tanh value for log_prob
        return action, dist.log_prob(action).sum(-1, keepdim=True)

    def target_features(self, next_obs: torch.Tensor) -> torch.Tensor:
        encoder = self.target_encoder if self.target_encoder is not None else self.encoder
        return encoder(next_obs)

    def update(self, batch: Any, step: int, draws: Mapping[str, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        take, b, a = _draws(draws, batch.obs.device), batch.obs.shape[0], self.action_dim
        obs_all = shift_crop(batch.obs.float().repeat(2, 1, 1, 1), take("obs_shift", (2 * b, 2), "shift"))
        next_all = shift_crop(batch.next_obs.float().repeat(2, 1, 1, 1), take("next_obs_shift", (2 * b, 2), "shift"))
        obs, obs_aug = obs_all[:b], obs_all[b:]
        next_obs, next_obs_aug = next_all[:b], next_all[b:]
        eps_all = take("next_action_eps", (2 * b, a), "eps")
        # update_critic
        with torch.no_grad():
            targets = []
            for x, eps in ((next_obs, eps_all[:b]), (next_obs_aug, eps_all[b:])):
                next_action, log_prob = self.policy(self.encoder(x), eps)
                target_q1, target_q2 = self.critic_target(self.target_features(x), next_action)
                target_v = torch.min(target_q1, target_q2) - self.alpha.detach() * log_prob
                targets.append(batch.reward + batch.discount * target_v)
            target_q = (targets[0] + targets[1]) / 2
        h = self.encoder(obs)
        current_q1, current_q2 = self.critic(h, batch.action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        q1_aug, q2_aug = self.critic(self.encoder(obs_aug), batch.action)
        critic_loss = critic_loss + F.mse_loss(q1_aug, target_q) + F.mse_loss(q2_aug, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss, "critic_target_q": target_q.mean(), "batch_reward": batch.reward.mean()}
        # update_actor_and_alpha: DrQ re-encodes obs with the updated convs (detached); DrQ-v2's layout reuses h
        if step % self.actor_update_every == 0:
            features = self.encoder(obs).detach() if self.target_encoder is not None else h.detach()
            action, log_prob = self.policy(features, take("actor_eps", (b, a), "eps"))
            actor_q1, actor_q2 = self.critic(features, action)
            actor_loss = (self.alpha.detach() * log_prob - torch.min(actor_q1, actor_q2)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.log_alpha_opt.zero_grad(set_to_none=True)
            alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
            alpha_loss.backward()
            self.log_alpha_opt.step()
            metrics.update(actor_loss=actor_loss, alpha_loss=alpha_loss)
        if step % self.target_update_every == 0:
            soft_update(self.critic, self.critic_target, self.tau)
            if self.target_encoder is not None:
                soft_update(self.encoder, self.target_encoder, self.tau)
        metrics["alpha"] = self.alpha
        return metrics
