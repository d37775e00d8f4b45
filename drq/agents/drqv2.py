"""DrQ-v2 (Yarats et al., 2021): DDPG-style actor-critic from pixels with n-step targets and scheduled noise.

Networks: encoder ``f`` (conv, uint8 pixels -> ``repr_dim``), actor ``mu`` (``tanh`` mean), twin critic ``Q_1, Q_2``
and its target copy ``Q'_1, Q'_2`` (trunk and heads; the encoder has no target copy). ``sigma(t)`` is the exploration
std at agent step ``t`` (``stddev_schedule``), ``c = stddev_clip``, ``tau = critic_target_tau``. The replay batch
holds n-step sums over ``m <= nstep`` steps (fewer at an episode end): ``r = sum_i gamma^i r_i`` and
``d = gamma^m prod_i discount_i``, both ``(B, 1)`` (``replay.FrameReplay``).

One update (``update(batch, t)``):
  1. augment: ``s = f(aug(obs))`` with gradient, ``s' = f(aug(next_obs))`` without (``aug``: random shift by up to
     ``AUG_PAD`` pixels, an integer crop on uint8);
  2. critic + encoder, one Adam step on
         ``a' = clip(mu(s') + clip(sigma(t) eps', -c, c), -1, 1)``,  ``eps' ~ N(0, I)``
         ``y  = r + d * min(Q'_1, Q'_2)(s', a')``                   (no gradient)
         ``L_Q = mse(Q_1(s, a), y) + mse(Q_2(s, a), y)``;
  3. actor, one Adam step on the *detached* features (only the actor's parameters get gradient):
         ``L_pi = -mean(min(Q_1, Q_2)(s, a~))``,  ``a~ = clip(mu(s) + clip(sigma(t) eps, -c, c), -1, 1)``
     (straight-through gradient through the clip);
  4. target critic: ``theta' <- theta' + tau (theta - theta')``, every update.

Acting (``act(obs, t, eval_mode)``): ``mu(f(obs))`` when evaluating; ``mu + sigma(t) eps`` clipped to [-1, 1] when
training, or uniform in [-1, 1] while ``t < num_expl_steps``. Reported ``actor_logprob`` / ``actor_entropy`` are those
of this executed action (``drq.agents.distributions.ClippedNormal``: a density plus atoms at the bounds).

Random draws of one update (names for the ``noise`` test seam, ``drq.agents.core.NoiseFn``): ``obs_shift`` and
``next_obs_shift`` ``(B, 2)``, ``next_action_eps`` ``(B, A)`` (``eps'``), ``actor_eps`` ``(B, A)`` (``eps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drq.agents.core import (AUG_PAD, AgentCore, actor_metrics, backward_and_step, check_batch, check_positive,
                             check_tau, critic_step, make_adam, obs_to_tensor, scalar_tensor, soft_update_,
                             to_device_batch)
from drq.agents.augment import random_shift
from drq.agents.networks import Critic, DrQV2Actor, Encoder
from drq.agents.schedules import parse_schedule

if TYPE_CHECKING:
    from drq.interfaces import TransitionBatch

__all__ = ["DrQV2Agent"]


class DrQV2Agent(AgentCore):
    """DrQ-v2 agent. Constructor keys and defaults as in docs/architecture.md; steps are agent steps.

    Args:
        obs_shape: ``(3 * frame_stack, H, W)``; action_shape: ``(A,)``; device: torch device; precision: ``'fp32'`` or
            ``'bf16'`` (autocast around the network passes, losses and optimiser state in fp32).
        lr: Adam learning rate (encoder, critic, actor). feature_dim / hidden_dim: trunk and MLP widths.
        critic_target_tau: soft target update rate. num_expl_steps: agent steps of uniform random actions in ``act``.
        stddev_schedule: exploration std (``drq.agents.schedules``, agent steps); stddev_clip: target/actor noise clip.
        channels_last: NHWC convs.
    """

    name = "drqv2"

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
                 precision: str = "fp32", lr: float = 1e-4, feature_dim: int = 50, hidden_dim: int = 1024,
                 critic_target_tau: float = 0.01, num_expl_steps: int = 2000,
                 stddev_schedule: str | float = "linear(1.0,0.1,500000)", stddev_clip: float = 0.3,
                 channels_last: bool = True):
        super().__init__(obs_shape, action_shape, device, precision)
        for key, value, integer in (("lr", lr, False), ("feature_dim", feature_dim, True),
                                    ("hidden_dim", hidden_dim, True),
                                    ("stddev_clip", stddev_clip, False)):
            check_positive(key, value, integer)
        self.critic_target_tau = check_tau(critic_target_tau)
        if isinstance(num_expl_steps, bool) or not isinstance(num_expl_steps, int) or num_expl_steps < 0:
            raise ValueError(f"num_expl_steps must be a non-negative int (agent steps), got {num_expl_steps!r}")
        self.stddev_schedule = parse_schedule(stddev_schedule)
        if not self.stddev_schedule.min_value > 0:
            raise ValueError(f"stddev_schedule {self.stddev_schedule.spec!r} reaches a non-positive std "
                             f"({self.stddev_schedule.min_value!r}); the exploration std must stay > 0")
        self.lr = float(lr)
        self.num_expl_steps = num_expl_steps
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

    def state_parts(self) -> list[str]:
        return ["encoder", "actor", "critic", "critic_target", "critic_opt", "actor_opt"]

    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return self.critic_opt, self.actor_opt

    def stddev(self, step: int) -> float:
        """Exploration std ``sigma(step)`` at agent step ``step`` (a Python float)."""
        return self.stddev_schedule(step)

    # ------------------------------------------------------------------------------------------------------ acting
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

    # ----------------------------------------------------------------------------------------------------- update
    def update(self, batch: TransitionBatch, step: int) -> dict[str, torch.Tensor]:
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
        """Steps 1-4 on device tensors (what a CUDA graph records). ``key`` is the branch (DrQ-v2 has one: ``()``);
        ``std`` the exploration std ``sigma(t)`` (float or 0-dim tensor)."""
        features, next_features = self.encode_pair(obs, next_obs)
        metrics = self.update_critic(features, action, reward, discount, next_features, std)
        metrics.update(self.update_actor(features, std))
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)
        return metrics

    def encode_pair(self, obs: torch.Tensor, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1: ``s = f(aug(obs))`` with gradient, ``s' = f(aug(next_obs))`` under ``torch.no_grad()``. uint8
        ``(B, C, H, W)`` in, features ``(B, repr_dim)`` out."""
        b = obs.shape[0]
        with self.autocast():
            features = self.encoder(random_shift(obs, AUG_PAD, self.draw("obs_shift", (b, 2), obs.device)))
            with torch.no_grad():
                shifts = self.draw("next_obs_shift", (b, 2), obs.device)
                next_features = self.encoder(random_shift(next_obs, AUG_PAD, shifts))
        return features, next_features

    def update_critic(self, features: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_features: torch.Tensor,
                      std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 2: one Adam step of encoder + critic on ``L_Q``. Shapes: features ``(B, repr_dim)``, action ``(B, A)``,
        reward / discount ``(B, 1)``."""
        with torch.no_grad():
            with self.autocast():
                next_dist = self.actor(next_features, std)
                eps = self.draw("next_action_eps", tuple(action.shape), action.device)
                next_action = next_dist.sample(clip=self.stddev_clip, eps=eps)
                target_q1, target_q2 = self.critic_target(next_features, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2).float()
        with self.autocast():
            q1, q2 = self.critic(features, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        return critic_step(self.critic_opt, self.encoder, self.critic, critic_loss, q1, q2, target_q, reward)

    def update_actor(self, features: torch.Tensor, std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 3: one Adam step of the actor on ``L_pi`` at features detached from the encoder. The reported
        log-prob and saturation are those of an executed action (unclipped noise, as in ``act``)."""
        features = features.detach()
        with self.autocast():
            dist = self.actor(features, std)
            eps = self.draw("actor_eps", (features.shape[0], self.action_shape[0]), features.device)
            action = dist.rsample(clip=self.stddev_clip, eps=eps)
            q1, q2 = self.critic(features, action)
        actor_loss = -torch.min(q1, q2).float().mean()
        actor_params = list(self.actor.parameters())
        norms = backward_and_step([self.actor_opt], actor_loss, {"actor": actor_params}, inputs=actor_params)

        with torch.no_grad():
            executed = dist.sample(clip=None)  # what the environment would execute from these states
            log_prob = dist.log_prob(executed).unsqueeze(-1)  # (B, 1)
        metrics, self.histograms = actor_metrics(actor_loss, dist, log_prob, executed, dist.pre_tanh_mean,
                                                 scalar_tensor(std, features.device), norms["actor"])
        return metrics
