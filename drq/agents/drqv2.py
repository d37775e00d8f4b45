"""DrQ-v2 (Yarats et al., 2021): DDPG-style actor-critic from pixels with n-step targets and scheduled noise.

One update (``update(batch, step)``, ``step`` in agent steps):
  1. random shift both ``obs`` and ``next_obs`` (integer crop on uint8), encode ``obs`` with gradient and ``next_obs``
     under ``torch.no_grad()``;
  2. critic + encoder: ``y = r + discount * min(Q'_1, Q'_2)(next, a')`` with ``a' = clip(tanh(mu(next)) + clip(eps,
     +-stddev_clip))`` from the target critic ``Q'``; ``loss = mse(Q_1, y) + mse(Q_2, y)`` (the batch's ``reward`` and
     ``discount`` are already n-step sums/products);
  3. actor on the *detached* features: ``loss = -min(Q_1, Q_2)(obs, a)``, ``a`` sampled with clipped noise; only the
     actor's parameters receive gradient (the encoder is trained by the critic loss only);
  4. target critic: ``theta' <- theta' + tau (theta - theta')``.

Random draws of one update (names for the ``noise`` test seam, see ``NoiseFn``): ``obs_shift`` and
``next_obs_shift`` ``(B, 2)``, ``next_action_eps`` ``(B, A)`` (target action), ``actor_eps`` ``(B, A)`` (actor loss).

This module also holds the parts the SAC agent shares (precision handling, observation checks, soft update, grad
norms), since SAC reuses DrQ-v2's encoder/critic layout.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drq.augment import random_shift
from drq.cuda_graphs import GraphedUpdate
from drq.distributions import ClippedNormal, tanh_log_det_jacobian
from drq.networks import Critic, DrQV2Actor, Encoder
from drq.schedules import parse_schedule

__all__ = ["DrQV2Agent", "PRECISIONS", "NoiseFn"]

PRECISIONS = ("fp32", "bf16")
AUG_PAD = 4

# The test seam for an update's randomness: ``agent.noise = fn`` with ``fn(name, shape) -> tensor`` supplies every
# random draw of ``update`` by name (see each agent's docstring for the names and shapes): ``*_shift`` draws are int64
# ``(n, 2)`` crop corners ``(dx, dy)`` in ``[0, 2 * AUG_PAD]`` (``drq.augment.random_shift``), ``*_eps`` draws are
# standard-normal float32 ``(n, A)``. ``None`` (the default, and the only setting the trainer uses) draws them from
# torch's generator. tests/test_transcription.py uses it to feed our agents and a reference the same numbers.
NoiseFn = Callable[[str, tuple[int, ...]], torch.Tensor]


# --------------------------------------------------------------------------------------------------------------------
# Parts shared with drq.agents.sac
# --------------------------------------------------------------------------------------------------------------------
def check_shapes(obs_shape: Sequence[int], action_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate ``obs_shape = (C, H, W)`` and ``action_shape = (A,)``; return them as int tuples."""
    try:
        obs_t = tuple(int(v) for v in obs_shape)
        act_t = tuple(int(v) for v in action_shape)
    except (TypeError, ValueError):
        raise ValueError(f"obs_shape must be (C, H, W) and action_shape (A,), got {obs_shape!r} and "
                         f"{action_shape!r}") from None
    if len(obs_t) != 3 or min(obs_t) < 1:
        raise ValueError(f"obs_shape must be (C, H, W) with positive sizes, got {obs_shape!r}")
    if len(act_t) != 1 or act_t[0] < 1:
        raise ValueError(f"action_shape must be (A,) with A >= 1, got {action_shape!r}")
    return obs_t, act_t


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_context(device: torch.device, precision: str,
                     cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast around network forward passes (``precision='bf16'``), or nothing (``'fp32'``). CUDA-graph capture
    needs ``cache_enabled=False`` (cached bf16 weight copies would be freed outside the graph's memory pool)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def obs_to_tensor(obs: Any, obs_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Check one observation (np.ndarray uint8 ``obs_shape``) and return it as a ``(1, C, H, W)`` uint8 tensor."""
    if not isinstance(obs, np.ndarray):
        raise ValueError(f"act: obs must be a numpy array of uint8 with shape {obs_shape}, got {type(obs).__name__}")
    if obs.dtype != np.uint8:
        raise ValueError(f"act: obs must have dtype uint8 (raw pixels), got dtype {obs.dtype}")
    if obs.shape != obs_shape:
        raise ValueError(f"act: obs must have shape {obs_shape} (3 * frame_stack, H, W), got shape {obs.shape}")
    return torch.as_tensor(obs, device=device).unsqueeze(0)


def check_batch(batch: Any, obs_shape: tuple[int, ...], action_dim: int) -> None:
    """Cheap shape/dtype checks on a replay batch (no host sync)."""
    for name in ("obs", "action", "reward", "discount", "next_obs"):
        if not hasattr(batch, name):
            raise ValueError(f"update: batch needs fields obs, action, reward, discount, next_obs; missing {name!r}")
    b = batch.obs.shape[0]
    for name in ("obs", "next_obs"):
        t = getattr(batch, name)
        if t.dtype != torch.uint8 or tuple(t.shape[1:]) != obs_shape:
            raise ValueError(f"update: batch.{name} must be uint8 (B, {', '.join(map(str, obs_shape))}), got "
                             f"{t.dtype} {tuple(t.shape)}")
    if tuple(batch.action.shape) != (b, action_dim):
        raise ValueError(f"update: batch.action must be ({b}, {action_dim}), got {tuple(batch.action.shape)}")
    for name in ("reward", "discount"):
        if tuple(getattr(batch, name).shape) != (b, 1):
            raise ValueError(f"update: batch.{name} must be ({b}, 1), got {tuple(getattr(batch, name).shape)}")


def scalar_tensor(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-dim float32 tensor on ``device`` (a tensor is passed through: a CUDA graph's static input)."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(())
    return torch.full((), float(value), device=device)


def make_adam(params: Iterable[nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where available (CPU and CUDA), else the foreach one."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def grad_norm(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """Total L2 norm of the parameters' gradients (a 0-dim tensor on their device; 0 if none has a gradient)."""
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def critic_step(opt: torch.optim.Optimizer, encoder: nn.Module, critic: nn.Module, critic_loss: torch.Tensor,
                q1: torch.Tensor, q2: torch.Tensor, target_q: torch.Tensor,
                reward: torch.Tensor) -> dict[str, torch.Tensor]:
    """Backward ``critic_loss`` into encoder + critic, take one step of their shared optimiser, return the critic's
    metrics as 0-dim device tensors (grad norms read before the step). ``q1, q2, target_q, reward``: ``(B, 1)``."""
    opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    metrics = {
        "critic_loss": critic_loss.detach(), "critic_q1": q1.detach().mean(), "critic_q2": q2.detach().mean(),
        "critic_target_q": target_q.mean(), "batch_reward": reward.mean(),
        "encoder_grad_norm": grad_norm(encoder.parameters()),
        "critic_grad_norm": grad_norm(critic.parameters()),
    }
    opt.step()
    return metrics


@torch.no_grad()
def soft_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- target + tau * (online - target)`` for every parameter (in place)."""
    t_params = list(target.parameters())
    torch._foreach_lerp_(t_params, list(online.parameters()), tau)


def to_device_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(obs, action, reward, discount, next_obs)`` on ``device`` (no copy when already there)."""
    return tuple(getattr(batch, k).to(device, non_blocking=True)
                 for k in ("obs", "action", "reward", "discount", "next_obs"))


def draw(noise: NoiseFn | None, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    """Draw ``name`` of ``shape`` from the test seam ``noise`` (on ``device``), or ``None`` when there is no seam (the
    caller then draws from torch's generator)."""
    if noise is None:
        return None
    value = noise(name, tuple(shape))
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"noise({name!r}) must have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value.to(device)


def check_positive(name: str, value: Any, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value) == int(value)
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


# --------------------------------------------------------------------------------------------------------------------
class DrQV2Agent:
    """DrQ-v2 agent. Constructor keys and defaults as in docs/architecture.md; steps are agent steps.

    Args:
        obs_shape: ``(3 * frame_stack, H, W)``; action_shape: ``(A,)``; device: torch device; precision: ``'fp32'`` or
            ``'bf16'`` (autocast around the network passes, losses and optimiser state in fp32).
        lr: Adam learning rate (encoder, critic, actor). feature_dim / hidden_dim: trunk and MLP widths.
        critic_target_tau: soft target update rate. num_expl_steps: agent steps of uniform random actions in ``act``.
        update_every_steps: the trainer calls ``update`` every this many agent steps.
        stddev_schedule: exploration std (``drq.schedules``, agent steps); stddev_clip: target/actor noise clip.
        channels_last: NHWC convs.
    """

    name = "drqv2"

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
                 precision: str = "fp32", lr: float = 1e-4, feature_dim: int = 50, hidden_dim: int = 1024,
                 critic_target_tau: float = 0.01, num_expl_steps: int = 2000, update_every_steps: int = 2,
                 stddev_schedule: str | float = "linear(1.0,0.1,500000)", stddev_clip: float = 0.3,
                 channels_last: bool = True):
        self.obs_shape, self.action_shape = check_shapes(obs_shape, action_shape)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        for key, value, integer in (("lr", lr, False), ("feature_dim", feature_dim, True),
                                    ("hidden_dim", hidden_dim, True), ("update_every_steps", update_every_steps, True),
                                    ("stddev_clip", stddev_clip, False)):
            check_positive(key, value, integer)
        if not (isinstance(critic_target_tau, (int, float)) and 0 < critic_target_tau <= 1):
            raise ValueError(f"critic_target_tau must be in (0, 1], got {critic_target_tau!r}")
        if isinstance(num_expl_steps, bool) or not isinstance(num_expl_steps, int) or num_expl_steps < 0:
            raise ValueError(f"num_expl_steps must be a non-negative int (agent steps), got {num_expl_steps!r}")
        self.stddev_schedule = parse_schedule(stddev_schedule)
        if not self.stddev_schedule.min_value > 0:
            raise ValueError(f"stddev_schedule {self.stddev_schedule.spec!r} reaches a non-positive std "
                             f"({self.stddev_schedule.min_value!r}); the exploration std must stay > 0")
        self.lr, self.critic_target_tau = float(lr), float(critic_target_tau)
        self.num_expl_steps, self.update_every_steps = num_expl_steps, int(update_every_steps)
        self.stddev_clip = float(stddev_clip)
        action_dim = self.action_shape[0]

        self.encoder = Encoder(self.obs_shape, channels_last=channels_last).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = DrQV2Actor(repr_dim, action_dim, int(feature_dim), int(hidden_dim)).to(self.device)
        self.critic = Critic(repr_dim, action_dim, int(feature_dim), int(hidden_dim)).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, int(feature_dim), int(hidden_dim)).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        # One optimiser for encoder + critic (both trained by the critic loss; Adam is per-parameter, so this equals
        # DrQ-v2's two optimisers with the same lr) and one for the actor.
        self.critic_opt = make_adam(list(self.encoder.parameters()) + list(self.critic.parameters()), self.lr,
                                    self.device)
        self.actor_opt = make_adam(self.actor.parameters(), self.lr, self.device)
        self.histograms: dict[str, torch.Tensor] = {}
        self.graphed_update: GraphedUpdate | None = None
        self.noise: NoiseFn | None = None  # test seam for the update's random draws (module docstring, NoiseFn)

    # ---------------------------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.precision, cache_enabled=self.graphed_update is None)

    def enable_cuda_graphs(self, warmup: int = 3, capture: bool = True) -> None:
        """Run every later ``update`` as one replayed CUDA graph (``drq.cuda_graphs``), captured after ``warmup`` eager
        updates. ``capture=False`` keeps the static-buffer path without recording (tests, any device)."""
        self.graphed_update = GraphedUpdate(self.update_tensors, (self.critic_opt, self.actor_opt), self.device,
                                            warmup=warmup, capture=capture)

    def stddev(self, step: int) -> float:
        """Exploration std at agent step ``step`` (a Python float)."""
        return self.stddev_schedule(step)

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one observation ``obs`` (uint8 ``(3k, H, W)``) at agent step ``step``: float32 ``(A,)`` in
        [-1, 1]. Evaluation: the mean ``tanh(mu)``. Training: a sample with unclipped noise, or uniform in [-1, 1] while
        ``step < num_expl_steps``."""
        x = obs_to_tensor(obs, self.obs_shape, self.device)
        if not eval_mode and step < self.num_expl_steps:  # uniform exploration: no network pass needed
            return torch.empty(self.action_shape, device=self.device).uniform_(-1.0, 1.0).cpu().numpy()
        with self.autocast():
            features = self.encoder(x)
            dist = self.actor(features, self.stddev(step))
        action = dist.mean if eval_mode else dist.sample(clip=None)
        return action[0].float().cpu().numpy()

    def sample_with_log_prob(self, features: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                              ClippedNormal]:
        """The executed-action distribution at ``features (B, repr_dim)`` (unclipped noise, as in ``act``), without
        gradient: ``(action (B, A), log_prob (B, 1), dist)``; ``log_prob`` is w.r.t. the mixed reference measure
        described in ``drq.distributions.ClippedNormal``."""
        with torch.no_grad():
            with self.autocast():
                dist = self.actor(features, self.stddev(step))
            action = dist.sample(clip=None)
            return action, dist.log_prob(action).unsqueeze(-1), dist

    def encode_pair(self, obs: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment and encode: ``obs`` with gradient, ``next_obs`` under ``torch.no_grad()``. uint8 ``(B, C, H, W)``
        in, features ``(B, repr_dim)`` out."""
        b = obs.shape[0]
        with self.autocast():
            features = self.encoder(random_shift(obs, AUG_PAD, draw(self.noise, "obs_shift", (b, 2), obs.device)))
            with torch.no_grad():
                shifts = draw(self.noise, "next_obs_shift", (b, 2), obs.device)
                next_features = self.encoder(random_shift(next_obs, AUG_PAD, shifts))
        return features, next_features

    def update_critic(self, features: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_features: torch.Tensor,
                      std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step of encoder + critic on the n-step TD loss. Shapes: features ``(B, repr_dim)``, action
        ``(B, A)``, reward / discount ``(B, 1)``; ``std``: the scheduled exploration std (float or 0-dim tensor)."""
        with torch.no_grad():
            with self.autocast():
                next_dist = self.actor(next_features, std)
                eps = draw(self.noise, "next_action_eps", tuple(action.shape), action.device)
                next_action = next_dist.sample(clip=self.stddev_clip, eps=eps)
                target_q1, target_q2 = self.critic_target(next_features, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2).float()
        with self.autocast():
            q1, q2 = self.critic(features, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)

        return critic_step(self.critic_opt, self.encoder, self.critic, critic_loss, q1, q2, target_q, reward)

    def update_actor(self, features: torch.Tensor, std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step of the actor on ``-min(Q1, Q2)`` at features detached from the encoder; only the actor's
        parameters receive gradient. Also computes the distribution metrics (see ``ClippedNormal``). ``std``: the
        scheduled exploration std (float or 0-dim tensor)."""
        features = features.detach()
        with self.autocast():
            dist = self.actor(features, std)
            eps = draw(self.noise, "actor_eps", (features.shape[0], self.action_shape[0]), features.device)
            action = dist.rsample(clip=self.stddev_clip, eps=eps)
            q1, q2 = self.critic(features, action)
        actor_loss = -torch.min(q1, q2).float().mean()
        actor_params = list(self.actor.parameters())
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=actor_params)
        actor_grad_norm = grad_norm(actor_params)
        self.actor_opt.step()

        with torch.no_grad():
            executed = dist.sample(clip=None)  # what the environment would execute from these states
            log_prob = dist.log_prob(executed).unsqueeze(-1)  # (B, 1), as in sample_with_log_prob
            pre_tanh = dist.pre_tanh_mean
            self.histograms = {"actor_logprob": log_prob.squeeze(-1), "abs_pre_tanh": pre_tanh.abs().flatten()}
            return {
                "actor_loss": actor_loss.detach(), "actor_logprob": log_prob.mean(),
                "actor_entropy": dist.entropy().mean(), "actor_std": scalar_tensor(std, features.device),
                "actor_saturation": (executed.abs() > 0.99).float().mean(),
                "actor_log_det_jacobian": tanh_log_det_jacobian(pre_tanh).mean(),
                "actor_grad_norm": actor_grad_norm,
            }

    def update(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """One DrQ-v2 update on a replay batch (``replay.Batch``: uint8 obs/next_obs ``(B, C, H, W)``, action
        ``(B, A)``, n-step reward and discount ``(B, 1)``). Returns 0-dim metric tensors on the device (no host sync).
        """
        check_batch(batch, self.obs_shape, self.action_shape[0])
        tensors = to_device_batch(batch, self.device)
        std = self.stddev(step)
        if self.graphed_update is not None:
            return self.graphed_update((), tensors, {"std": std})
        return self.update_tensors((), *tensors, std=std)

    def update_tensors(self, key: tuple, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                       discount: torch.Tensor, next_obs: torch.Tensor,
                       std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """The update on device tensors (what a CUDA graph records). ``key`` is the branch (DrQ-v2 has one: ``()``);
        ``std`` the exploration std at this step."""
        features, next_features = self.encode_pair(obs, next_obs)
        metrics = self.update_critic(features, action, reward, discount, next_features, std)
        metrics.update(self.update_actor(features, std))
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)
        return metrics

    # ---------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Networks and optimisers (tensors and plain containers: ``torch.load(weights_only=True)``-safe)."""
        return {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "actor_opt": self.actor_opt.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"{self.name} state_dict: expected keys {sorted(expected)}, got {sorted(state)}")
        for key in ("encoder", "actor", "critic", "critic_target", "critic_opt", "actor_opt"):
            getattr(self, key).load_state_dict(state[key])
        if self.graphed_update is not None:  # the graphs point at the replaced optimiser state: capture anew
            self.graphed_update.reset()
