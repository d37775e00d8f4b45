"""SAC from pixels with DrQ's augmentation averaging (Kostrikov, Yarats & Fergus, 2020), on DrQ-v2's networks.

Networks: encoder ``f``, its EMA target copy ``f'`` (``target_encoder=True``; else ``f' = f``), tanh-Gaussian policy
``pi(. | s)`` (``drq.agents.distributions.TanhNormal``: ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``, ``log sigma`` squashed
into ``log_std_bounds``), twin critic ``Q_1, Q_2`` with target copy ``Q'_1, Q'_2``, temperature
``alpha = exp(log_alpha)``. ``K = num_target_augs``, ``M = num_critic_augs``, ``tau = critic_target_tau``,
``H = target_entropy = -A``. The replay batch holds n-step sums ``r`` and ``d = gamma^m prod_i discount_i``
(``m <= nstep`` steps), both ``(B, 1)``. ``log pi(a | s)`` is the tanh-corrected density
``log N(u | mu, sigma) - sum_i log(1 - tanh^2 u_i)``, ``(B, 1)``.

One update (``update(batch, t)``, ``t`` in agent steps):
  1. augment: ``M`` random shifts of ``obs`` encoded with gradient in one pass, ``s_m = f(aug_m(obs))``
     (``(M B, repr_dim)``), and ``K`` of ``next_obs`` without gradient, ``s'_k = f(aug_k(next_obs))`` for the
     policy and ``s'~_k = f'(aug_k(next_obs))`` for the target critic (``(K B, repr_dim)`` each);
  2. critic + encoder, one Adam step on (DrQ's averaged target, DrQ's sum over the ``M`` shifts)
         ``a'_k ~ pi(. | s'_k)``
         ``y = r + d * (1/K) sum_k [min(Q'_1, Q'_2)(s'~_k, a'_k) - alpha log pi(a'_k | s'_k)]``   (no gradient)
         ``L_Q = sum_m [mse(Q_1(s_m, a), y) + mse(Q_2(s_m, a), y)]``;
  3. every ``actor_update_every_steps``, on features ``s`` of the first shift, detached from the encoder (only the
     actor's parameters and ``log_alpha`` get gradient), ``a~ ~ pi(. | s)`` reparameterised:
         ``L_pi    = mean(alpha.detach() * log pi(a~ | s) - min(Q_1, Q_2)(s, a~))``
         ``L_alpha = mean(alpha * (-log pi(a~ | s) - H).detach())``
     one backward of ``L_pi + L_alpha`` (the detaches keep the two apart), one Adam step each;
  4. every ``critic_target_update_every_steps``: ``theta' <- theta' + tau (theta - theta')`` for the target critic
     (trunk and Q heads) and, with ``target_encoder=True``, for ``f'``.

``target_encoder=True`` (the default, ``agent=sac``) is DrQ's update as published (denisyarats/drq, ``drq.py``):
its ``critic_target`` is a whole copy of the critic, conv encoder included, soft-updated with the same tau and cadence,
and its actor step re-encodes the observations with the conv weights the critic step has just updated. Ours does both:
the features ``s`` of step 3 come from a second, gradient-free pass of the updated encoder over the first shift of
``obs``. ``target_encoder=False`` is DrQ-v2's layout: no target encoder (``s'~_k = s'_k``), and step 3 reuses the
features encoded before the critic step (detached), saving that pass. Cost per update (``bench/update.py --agent
sac``, docs/fidelity.md): the target encoder adds a forward pass over the ``K B`` next observations; the actor's
re-encoding a forward pass over ``B`` observations every second update.

Acting: ``tanh(mu(f(obs)))`` when evaluating, a sample of ``pi`` when training (no uniform seed phase of its own:
the trainer's ``num_seed_frames`` covers it).

Random draws of one update (names for the ``noise`` test seam, ``drq.agents.core.NoiseFn``): ``obs_shift``
``(M B, 2)``, ``next_obs_shift`` ``(K B, 2)``, ``next_action_eps`` ``(K B, A)`` (target actions), ``actor_eps``
``(B, A)`` (actor and temperature losses, actor steps only).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drq.agents.core import AUG_PAD, AgentCore, actor_metrics, grad_norm, make_adam, obs_to_tensor, soft_update_
from drq.agents.augment import random_shift
from drq.agents.distributions import TanhNormal
from drq.agents.networks import Critic, Encoder, SACActor

if TYPE_CHECKING:
    from drq.interfaces import TransitionBatch

__all__ = ["SACAgent"]


class SACAgent(AgentCore):
    """SAC (DrQ) agent. Constructor keys and defaults as in docs/architecture.md; steps are agent steps.

    Args:
        obs_shape: ``(3 * frame_stack, H, W)``; action_shape: ``(A,)``; device; precision: ``'fp32'`` | ``'bf16'``.
        lr: Adam learning rate for encoder + critic, actor and log alpha. init_temperature: initial alpha.
        log_std_bounds: ``(low, high)`` for the actor's log std. critic_target_tau: soft target rate.
        actor_update_every_steps / critic_target_update_every_steps: cadences in agent steps.
        num_target_augs (K) / num_critic_augs (M): DrQ's augmentation averaging (K = M = 1 is plain RAD-style SAC).
        target_encoder: DrQ's layout (an EMA target copy of the encoder; the actor step re-encodes with the updated
            encoder) when true; DrQ-v2's (no target encoder, the actor reuses the critic step's features) when false.
        channels_last: NHWC convs.
    Values arrive checked (``drq.config.schema``); only shapes are checked here.
    """

    name = "sac"

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
                 precision: str = "fp32", lr: float = 1e-3, feature_dim: int = 50, hidden_dim: int = 1024,
                 critic_target_tau: float = 0.01, init_temperature: float = 0.1,
                 log_std_bounds: Sequence[float] = (-10.0, 2.0),
                 actor_update_every_steps: int = 2, critic_target_update_every_steps: int = 2,
                 num_target_augs: int = 2, num_critic_augs: int = 2, target_encoder: bool = True,
                 channels_last: bool = True):
        super().__init__(obs_shape, action_shape, device, precision)
        self.critic_target_tau = float(critic_target_tau)
        bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))
        self.lr = float(lr)
        self.actor_update_every_steps = int(actor_update_every_steps)
        self.critic_target_update_every_steps = int(critic_target_update_every_steps)
        self.num_target_augs, self.num_critic_augs = int(num_target_augs), int(num_critic_augs)
        action_dim = self.action_shape[0]
        self.target_entropy = -float(action_dim)
        self._target_entropy_metric = torch.full((), self.target_entropy, device=self.device)  # a constant, made once

        self.encoder = Encoder(self.obs_shape, channels_last=channels_last).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = SACActor(repr_dim, action_dim, int(feature_dim), int(hidden_dim), bounds).to(self.device)
        self.critic = Critic(repr_dim, action_dim, int(feature_dim), int(hidden_dim)).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, int(feature_dim), int(hidden_dim)).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.target_encoder: Encoder | None = None
        if target_encoder:
            self.target_encoder = Encoder(self.obs_shape, channels_last=channels_last).to(self.device)
            self.target_encoder.load_state_dict(self.encoder.state_dict())
            self.target_encoder.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(init_temperature), device=self.device, requires_grad=True)
        self.critic_opt = make_adam(list(self.encoder.parameters()) + list(self.critic.parameters()), self.lr,
                                    self.device)
        self.actor_opt = make_adam(self.actor.parameters(), self.lr, self.device)
        self.alpha_opt = make_adam([self.log_alpha], self.lr, self.device)

    def state_parts(self) -> list[str]:
        """Networks (``target_encoder`` only when there is one), ``log_alpha`` and the optimisers."""
        parts = ["encoder", "actor", "critic", "critic_target", "log_alpha", "critic_opt", "actor_opt", "alpha_opt"]
        return parts + (["target_encoder"] if self.target_encoder is not None else [])

    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        return self.critic_opt, self.actor_opt, self.alpha_opt

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """As ``AgentCore.load_state_dict``, with the fix named when only the target encoder differs."""
        if set(state) ^ set(self.state_parts()) == {"target_encoder"}:
            saved = "target_encoder" in state
            raise ValueError(f"{self.name} state_dict: it was saved {'with' if saved else 'without'} a target encoder "
                             f"and this agent has {'none' if saved else 'one'}: use "
                             f"agent.target_encoder={str(saved).lower()}")
        super().load_state_dict(state)

    @property
    def alpha(self) -> torch.Tensor:
        """The temperature ``exp(log_alpha)`` (0-dim, with gradient to ``log_alpha``)."""
        return self.log_alpha.exp()

    def sample_with_log_prob(self, features: torch.Tensor, eps: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TanhNormal]:
        """Reparameterised sample of ``pi(. | features)``, ``features (N, repr_dim)``: ``(a (N, A), u (N, A),
        log pi(a) (N, 1), dist)``, ``a = tanh(u)``, the log-density tanh-corrected and float32. ``eps``: the
        standard-normal noise ``(N, A)``, drawn if omitted."""
        with self.autocast():
            dist = self.actor(features)
        action, pre_tanh = dist.rsample_with_pre_tanh(eps=eps)
        return action, pre_tanh, dist.log_prob(action, pre_tanh).unsqueeze(-1), dist

    # ------------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one observation (uint8 ``(3k, H, W)``): float32 ``(A,)`` in (-1, 1); ``tanh(mu)`` when
        evaluating, a sample otherwise. ``step`` (agent steps) is accepted for the common interface."""
        x = obs_to_tensor(obs, self.obs_shape, self.device)
        with self.autocast():
            dist = self.actor(self.encoder(x))
        action = dist.mean if eval_mode else dist.sample()
        return action[0].float().cpu().numpy()

    # ----------------------------------------------------------------------------------------------------- update
    def update(self, batch: TransitionBatch, step: int) -> dict[str, torch.Tensor]:
        """One SAC/DrQ update on a replay batch (``replay.Batch``: uint8 obs/next_obs ``(B, C, H, W)``, action
        ``(B, A)``, n-step reward and discount ``(B, 1)``) at agent step ``step``. Returns 0-dim metric tensors on the
        device (no host sync), the actor's and alpha's on actor steps only (``AgentCore.run_update`` checks the
        batch and runs ``update_tensors`` or its CUDA graph)."""
        actor_step = step % self.actor_update_every_steps == 0
        target_step = step % self.critic_target_update_every_steps == 0
        return self.run_update(batch, (actor_step, target_step))

    def update_tensors(self, branch: tuple[bool, bool], obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                       discount: torch.Tensor, next_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Steps 1-4 of the module docstring on device tensors (what a CUDA graph records); ``branch = (actor step?,
        target update?)``."""
        actor_step, target_step = branch
        b, action_dim, m, k = obs.shape[0], self.action_shape[0], self.num_critic_augs, self.num_target_augs
        # 1. augment: M shifted copies of obs, K of next_obs (copy-major rows); encode obs with gradient
        obs_aug = random_shift(obs.repeat(m, 1, 1, 1), AUG_PAD, self.draw("obs_shift", (m * b, 2)))
        next_obs_aug = random_shift(next_obs.repeat(k, 1, 1, 1), AUG_PAD, self.draw("next_obs_shift", (k * b, 2)))
        with self.autocast():
            features = self.encoder(obs_aug)  # (M B, repr_dim)

        # 2. critic and encoder: DrQ's target averaged over the K shifts, without gradient (the policy's next actions
        #    from the online encoder, the target critic on the target encoder's features), then one Adam step on
        #    DrQ's loss summed over the M shifts
        with torch.no_grad():
            with self.autocast():
                next_features = self.encoder(next_obs_aug)  # (K B, repr_dim)
                target_features = next_features if self.target_encoder is None else self.target_encoder(next_obs_aug)
            next_eps = self.draw("next_action_eps", (k * b, action_dim))
            next_action, _, next_log_prob, _ = self.sample_with_log_prob(next_features, next_eps)  # log pi (K B, 1)
            with self.autocast():
                target_q1, target_q2 = self.critic_target(target_features, next_action)
            target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_prob
            target_q = reward + discount * target_v.view(k, b, 1).mean(0)  # (B, 1)

        with self.autocast():
            q1, q2 = self.critic(features, action.repeat(m, 1))  # (M B, 1) each
        target_q_m = target_q.repeat(m, 1)
        critic_loss = m * (F.mse_loss(q1, target_q_m) + F.mse_loss(q2, target_q_m))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        encoder_grad_norm, critic_grad_norm = grad_norm(self.encoder.parameters()), grad_norm(self.critic.parameters())
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.detach(), "critic_q1": q1.detach().mean(),
                   "critic_q2": q2.detach().mean(), "critic_target_q": target_q.mean(), "batch_reward": reward.mean(),
                   "encoder_grad_norm": encoder_grad_norm, "critic_grad_norm": critic_grad_norm}

        # 3. actor and temperature, every actor_update_every_steps, on detached features of the first shift: DrQ
        #    re-encodes them with the encoder just updated; without a target encoder, those from before the critic step
        if actor_step:
            if self.target_encoder is not None:
                with torch.no_grad(), self.autocast():
                    actor_features = self.encoder(obs_aug[:b])
            else:
                actor_features = features[:b].detach()
            eps = self.draw("actor_eps", (b, action_dim))
            pi_action, pre_tanh, log_prob, dist = self.sample_with_log_prob(actor_features, eps)  # log pi (B, 1)
            with self.autocast():
                actor_q1, actor_q2 = self.critic(actor_features, pi_action)
            actor_loss = (self.alpha.detach() * log_prob - torch.min(actor_q1, actor_q2)).mean()
            alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            self.alpha_opt.zero_grad(set_to_none=True)
            (actor_loss + alpha_loss).backward(inputs=[*self.actor.parameters(), self.log_alpha])
            actor_grad_norm = grad_norm(self.actor.parameters())
            self.actor_opt.step()
            self.alpha_opt.step()
            actor_part, self.histograms = actor_metrics(actor_loss, dist, log_prob, pi_action, pre_tanh,
                                                        dist.scale.detach().mean(), actor_grad_norm)
            metrics.update(actor_part, alpha_loss=alpha_loss.detach())

        # 4. targets, every critic_target_update_every_steps: theta' <- theta' + tau (theta - theta')
        if target_step:
            soft_update_(self.critic_target, self.critic, self.critic_target_tau)
            if self.target_encoder is not None:
                soft_update_(self.target_encoder, self.encoder, self.critic_target_tau)
        metrics.update(alpha=self.log_alpha.detach().exp(), target_entropy=self._target_entropy_metric)
        return metrics
