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

from drq.agents.core import AUG_PAD, AgentCore, actor_metrics, grad_norm, make_adam, obs_to_tensor, soft_update_
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
    Values arrive checked (``drq.config.schema``); only shapes are checked here.
    """

    name = "drqv2"

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
                 precision: str = "fp32", lr: float = 1e-4, feature_dim: int = 50, hidden_dim: int = 1024,
                 critic_target_tau: float = 0.01, num_expl_steps: int = 2000,
                 stddev_schedule: str | float = "linear(1.0,0.1,500000)", stddev_clip: float = 0.3,
                 channels_last: bool = True):
        super().__init__(obs_shape, action_shape, device, precision)
        self.critic_target_tau = float(critic_target_tau)
        self.stddev_schedule = parse_schedule(stddev_schedule)
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
        ``(B, A)``, n-step reward and discount ``(B, 1)``) at agent step ``step``. Returns 0-dim metric tensors on the
        device (no host sync). ``run_update`` checks the batch and runs ``update_tensors``, or its CUDA graph."""
        return self.run_update(batch, std=self.stddev(step))

    def update_tensors(self, branch: tuple, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                       discount: torch.Tensor, next_obs: torch.Tensor,
                       std: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Steps 1-4 of the module docstring on device tensors (what a CUDA graph records). DrQ-v2 has one
        ``branch``, ``()``; ``std`` is the exploration std ``sigma(t)`` (a float, or a 0-dim tensor in a CUDA graph)."""
        b, action_dim = obs.shape[0], self.action_shape[0]
        # 1. augment (a random shift of up to AUG_PAD pixels), encode obs with gradient
        obs_aug = random_shift(obs, AUG_PAD, self.draw("obs_shift", (b, 2)))
        next_obs_aug = random_shift(next_obs, AUG_PAD, self.draw("next_obs_shift", (b, 2)))
        with self.autocast():
            features = self.encoder(obs_aug)

        # 2. critic and encoder: the target y = r + d * min(Q'_1, Q'_2)(s', a') without gradient, a' with clipped
        #    noise, then one Adam step on L_Q = mse(Q_1(s, a), y) + mse(Q_2(s, a), y)
        with torch.no_grad(), self.autocast():
            next_features = self.encoder(next_obs_aug)
            next_dist = self.actor(next_features, std)
            next_action = next_dist.sample(clip=self.stddev_clip, eps=self.draw("next_action_eps", (b, action_dim)))
            target_q1, target_q2 = self.critic_target(next_features, next_action)
        target_q = reward + discount * torch.min(target_q1, target_q2)

        with self.autocast():
            q1, q2 = self.critic(features, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        encoder_grad_norm, critic_grad_norm = grad_norm(self.encoder.parameters()), grad_norm(self.critic.parameters())
        self.critic_opt.step()

        # 3. actor, on the detached features: one Adam step on L_pi = -mean(min(Q_1, Q_2)(s, a~)), actor only
        features = features.detach()
        with self.autocast():
            dist = self.actor(features, std)
            actor_action = dist.rsample(clip=self.stddev_clip, eps=self.draw("actor_eps", (b, action_dim)))
            actor_q1, actor_q2 = self.critic(features, actor_action)
        actor_loss = -torch.min(actor_q1, actor_q2).float().mean()  # fp32 under bf16 autocast, as the critic's
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        actor_grad_norm = grad_norm(self.actor.parameters())
        self.actor_opt.step()

        # 4. target critic: theta' <- theta' + tau (theta - theta')
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)

        # metrics: the critic's, and the policy's at the action the environment would execute (unclipped noise)
        metrics = {"critic_loss": critic_loss.detach(), "critic_q1": q1.detach().mean(),
                   "critic_q2": q2.detach().mean(), "critic_target_q": target_q.mean(), "batch_reward": reward.mean(),
                   "encoder_grad_norm": encoder_grad_norm, "critic_grad_norm": critic_grad_norm}
        with torch.no_grad():
            executed = dist.sample(clip=None)
            log_prob = dist.log_prob(executed).unsqueeze(-1)  # (B, 1)
        # a float becomes a device scalar by a fill: a host-to-device copy would wait for the update on CUDA
        std_metric = std if isinstance(std, torch.Tensor) else torch.full((), float(std), device=self.device)
        actor_part, self.histograms = actor_metrics(actor_loss, dist, log_prob, executed, dist.pre_tanh_mean,
                                                    std_metric, actor_grad_norm)
        return {**metrics, **actor_part}
