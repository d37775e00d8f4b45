"""SAC from pixels with DrQ's augmentation averaging (Kostrikov, Yarats & Fergus, 2020), on DrQ-v2's networks.

One update (``update(batch, step)``, ``step`` in agent steps), with ``K = num_target_augs``, ``M = num_critic_augs``:
  1. ``M`` independent random shifts of ``obs`` encoded with gradient in one pass (``(M B, repr_dim)``) and ``K`` of
     ``next_obs`` under ``torch.no_grad()`` (``(K B, repr_dim)``): by the online encoder ``f`` for the policy's next
     actions, and, with ``target_encoder=True``, also by the target encoder ``f'`` for the target critic;
  2. critic + encoder: ``y = r + discount * mean_k [min(Q'_1, Q'_2)(f'(next_k), a'_k)
     - alpha log pi(a'_k | f(next_k))]`` with ``a'_k ~ pi(. | f(next_k))`` (``f' = f`` when ``target_encoder=False``);
     ``loss = sum_m [mse(Q_1(obs_m, a), y) + mse(Q_2(obs_m, a), y)]`` (DrQ's sum over the ``M`` augmentations);
  3. every ``actor_update_every_steps``: actor on detached features of the first augmentation of ``obs``,
     ``loss = mean(alpha.detach() * log pi(a|s) - min(Q_1, Q_2)(s, a))`` (only the actor's parameters get gradient),
     then the temperature, ``loss = mean(alpha * (-log pi(a|s) - target_entropy).detach())``, ``target_entropy = -A``;
  4. every ``critic_target_update_every_steps``: ``theta' <- theta' + tau (theta - theta')`` for the target critic
     (trunk and Q heads) and, with ``target_encoder=True``, the target encoder.
``log pi`` is the tanh-corrected log-density of the executed action (``drq.distributions.TanhNormal``), ``(B, 1)``.

``target_encoder=True`` (the default, ``agent=sac``) is DrQ's update as published (denisyarats/drq, ``drq.py``):
its ``critic_target`` is a whole copy of the critic, conv encoder included, soft-updated with the same tau and cadence,
and its actor step re-encodes the observations with the conv weights the critic step has just updated. Ours does both:
the features the actor and temperature see in step 3 come from a second, gradient-free pass of the updated encoder
over the same shifted ``obs``. ``target_encoder=False`` is DrQ-v2's layout: no target encoder (next observations go
through the online encoder), and step 3 reuses the features encoded before the critic step (detached), saving that
pass. Cost per update (``bench/update.py --agent sac``, docs/fidelity.md): the target encoder adds a forward pass over
the ``K B`` next observations; the actor's re-encoding a forward pass over ``B`` observations every second update.

Random draws of one update (names for the ``noise`` test seam, ``drq.agents.drqv2.NoiseFn``): ``obs_shift``
``(M B, 2)``, ``next_obs_shift`` ``(K B, 2)``, ``next_action_eps`` ``(K B, A)`` (target actions), ``actor_eps``
``(B, A)`` (actor and temperature losses, actor steps only).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drq.agents.drqv2 import (AUG_PAD, NoiseFn, autocast_context, check_batch, check_positive, check_precision,
                              check_shapes, critic_step, draw, grad_norm, make_adam, obs_to_tensor, soft_update_,
                              to_device_batch)
from drq.augment import random_shift
from drq.cuda_graphs import GraphedUpdate
from drq.distributions import TanhNormal, tanh_log_det_jacobian
from drq.networks import Critic, Encoder, SACActor

__all__ = ["SACAgent"]


class SACAgent:
    """SAC (DrQ) agent. Constructor keys and defaults as in docs/architecture.md; steps are agent steps.

    Args:
        obs_shape: ``(3 * frame_stack, H, W)``; action_shape: ``(A,)``; device; precision: ``'fp32'`` | ``'bf16'``.
        lr: Adam learning rate for encoder + critic, actor and log alpha. init_temperature: initial alpha.
        log_std_bounds: ``(low, high)`` for the actor's log std. critic_target_tau: soft target rate.
        update_every_steps / actor_update_every_steps / critic_target_update_every_steps: cadences in agent steps.
        num_target_augs (K) / num_critic_augs (M): DrQ's augmentation averaging (K = M = 1 is plain RAD-style SAC).
        target_encoder: DrQ's layout (an EMA target copy of the encoder; the actor step re-encodes with the updated
            encoder) when true; DrQ-v2's (no target encoder, the actor reuses the critic step's features) when false.
        channels_last: NHWC convs.
    """

    name = "sac"

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
                 precision: str = "fp32", lr: float = 1e-3, feature_dim: int = 50, hidden_dim: int = 1024,
                 critic_target_tau: float = 0.01, init_temperature: float = 0.1,
                 log_std_bounds: Sequence[float] = (-10.0, 2.0), update_every_steps: int = 1,
                 actor_update_every_steps: int = 2, critic_target_update_every_steps: int = 2,
                 num_target_augs: int = 2, num_critic_augs: int = 2, target_encoder: bool = True,
                 channels_last: bool = True):
        self.obs_shape, self.action_shape = check_shapes(obs_shape, action_shape)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        for key, value, integer in (
                ("lr", lr, False), ("feature_dim", feature_dim, True), ("hidden_dim", hidden_dim, True),
                ("init_temperature", init_temperature, False), ("update_every_steps", update_every_steps, True),
                ("actor_update_every_steps", actor_update_every_steps, True),
                ("critic_target_update_every_steps", critic_target_update_every_steps, True),
                ("num_target_augs", num_target_augs, True), ("num_critic_augs", num_critic_augs, True)):
            check_positive(key, value, integer)
        if not (isinstance(critic_target_tau, (int, float)) and 0 < critic_target_tau <= 1):
            raise ValueError(f"critic_target_tau must be in (0, 1], got {critic_target_tau!r}")
        try:
            bounds = tuple(float(v) for v in log_std_bounds)
        except (TypeError, ValueError):
            bounds = ()
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ValueError(f"log_std_bounds must be [low, high] with low < high, got {log_std_bounds!r}")
        self.lr, self.critic_target_tau = float(lr), float(critic_target_tau)
        self.update_every_steps = int(update_every_steps)
        self.actor_update_every_steps = int(actor_update_every_steps)
        self.critic_target_update_every_steps = int(critic_target_update_every_steps)
        self.num_target_augs, self.num_critic_augs = int(num_target_augs), int(num_critic_augs)
        if not isinstance(target_encoder, bool):
            raise ValueError(f"target_encoder must be true or false, got {target_encoder!r}")
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
        self.histograms: dict[str, torch.Tensor] = {}
        self._actor_metrics: dict[str, torch.Tensor] | None = None
        self.graphed_update: GraphedUpdate | None = None
        self.noise: NoiseFn | None = None  # test seam for the update's random draws (module docstring)

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        """The temperature ``exp(log_alpha)`` (0-dim, with gradient to ``log_alpha``)."""
        return self.log_alpha.exp()

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.precision, cache_enabled=self.graphed_update is None)

    def enable_cuda_graphs(self, warmup: int = 3, capture: bool = True) -> None:
        """Run every later ``update`` as a replayed CUDA graph (``drq.cuda_graphs``): one graph per branch (critic
        only; critic + actor + temperature; with or without the target update), each captured after ``warmup`` eager
        updates of that branch. ``capture=False`` keeps the static-buffer path without recording (tests, any device)."""
        self.graphed_update = GraphedUpdate(self.update_tensors, (self.critic_opt, self.actor_opt, self.alpha_opt),
                                            self.device, warmup=warmup, capture=capture)

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action for one observation (uint8 ``(3k, H, W)``): float32 ``(A,)`` in (-1, 1); ``tanh(mu)`` when
        evaluating, a sample otherwise. ``step`` (agent steps) is accepted for the common interface."""
        x = obs_to_tensor(obs, self.obs_shape, self.device)
        with self.autocast():
            dist = self.actor(self.encoder(x))
        action = dist.mean if eval_mode else dist.sample()
        return action[0].float().cpu().numpy()

    def sample_with_log_prob(self, features: torch.Tensor, eps: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TanhNormal]:
        """Reparameterised policy sample at ``features (B, repr_dim)``: ``(action (B, A), pre_tanh (B, A),
        log_prob (B, 1), dist)`` with the tanh-corrected log-density of ``action`` (float32). ``eps``: the
        standard-normal noise ``(B, A)``, drawn if omitted."""
        with self.autocast():
            dist = self.actor(features)
        action, pre_tanh = dist.rsample_with_pre_tanh(eps=eps)
        return action, pre_tanh, dist.log_prob(action, pre_tanh).unsqueeze(-1), dist

    def encode(self, obs: torch.Tensor, next_obs: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Shift and encode: ``M`` shifted copies of ``obs`` (uint8 ``(B, C, H, W)``) encoded with gradient and ``K``
        of ``next_obs`` under ``torch.no_grad()``, one encoder pass each (copy-major rows). Returns ``(obs_aug (M B, C,
        H, W) uint8, features (M B, repr_dim), next_features (K B, repr_dim), target_next_features (K B, repr_dim) from
        the target encoder, or None without one)``."""
        m, k = self.num_critic_augs, self.num_target_augs
        obs_aug = random_shift(obs.repeat(m, 1, 1, 1), AUG_PAD,
                               draw(self.noise, "obs_shift", (m * obs.shape[0], 2), obs.device))
        next_aug = random_shift(next_obs.repeat(k, 1, 1, 1), AUG_PAD,
                                draw(self.noise, "next_obs_shift", (k * obs.shape[0], 2), obs.device))
        target_next_features = None
        with self.autocast():
            features = self.encoder(obs_aug)
            with torch.no_grad():
                next_features = self.encoder(next_aug)
                if self.target_encoder is not None:
                    target_next_features = self.target_encoder(next_aug)
        return obs_aug, features, next_features, target_next_features

    def update_critic(self, features: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_features: torch.Tensor,
                      target_next_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One Adam step of encoder + critic. ``features (M B, repr)``, ``next_features (K B, repr)`` (the online
        encoder's: the policy's next actions), ``target_next_features (K B, repr)`` (the target encoder's: the target
        critic's input; ``next_features`` if None), ``action (B, A)``, ``reward``/``discount`` ``(B, 1)``."""
        b = action.shape[0]
        m, k = features.shape[0] // b, next_features.shape[0] // b
        if target_next_features is None:
            target_next_features = next_features
        with torch.no_grad():
            alpha = self.alpha
            eps = draw(self.noise, "next_action_eps", (k * b, self.action_shape[0]), action.device)
            next_action, _, next_log_prob, _ = self.sample_with_log_prob(next_features, eps)  # log_prob (K B, 1)
            with self.autocast():
                target_q1, target_q2 = self.critic_target(target_next_features, next_action)
            target_v = torch.min(target_q1, target_q2).float() - alpha * next_log_prob
            target_q = reward + discount * target_v.view(k, b, 1).mean(0)  # (B, 1)
        with self.autocast():
            q1, q2 = self.critic(features, action.repeat(m, 1))
        q1, q2 = q1.float(), q2.float()
        target_rep = target_q.repeat(m, 1)
        critic_loss = m * (F.mse_loss(q1, target_rep) + F.mse_loss(q2, target_rep))

        return critic_step(self.critic_opt, self.encoder, self.critic, critic_loss, q1, q2, target_q, reward)

    def update_actor_and_alpha(self, features: torch.Tensor, train: bool = True) -> dict[str, torch.Tensor]:
        """Actor step on features detached from the encoder (only the actor's parameters get gradient) and the
        temperature step, from one backward pass of the two losses. ``train=False`` only evaluates the losses and
        metrics. ``features (B, repr_dim)``."""
        features = features.detach()
        eps = draw(self.noise, "actor_eps", (features.shape[0], self.action_shape[0]), features.device) if train \
            else None
        with torch.set_grad_enabled(train):
            action, pre_tanh, log_prob, dist = self.sample_with_log_prob(features, eps)  # log_prob (B, 1)
            with self.autocast():
                q1, q2 = self.critic(features, action)
            actor_loss = (self.alpha.detach() * log_prob - torch.min(q1, q2).float()).mean()
            alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
        actor_params = list(self.actor.parameters())
        if train:
            # One backward for both losses: the detaches keep them apart (the temperature loss gives the actor no
            # gradient, the actor loss gives log_alpha none), so this equals DrQ's two separate steps.
            self.actor_opt.zero_grad(set_to_none=True)
            self.alpha_opt.zero_grad(set_to_none=True)
            (actor_loss + alpha_loss).backward(inputs=actor_params + [self.log_alpha])
            actor_grad_norm = grad_norm(actor_params)
            self.actor_opt.step()
            self.alpha_opt.step()
        else:
            actor_grad_norm = torch.zeros((), device=features.device)
        with torch.no_grad():
            self.histograms = {"actor_logprob": log_prob.detach().squeeze(-1),
                               "abs_pre_tanh": pre_tanh.detach().abs().flatten()}
            return {
                "actor_loss": actor_loss.detach(), "actor_logprob": log_prob.detach().mean(),
                "actor_entropy": dist.entropy().mean(), "actor_std": dist.scale.mean(),
                "actor_saturation": (action.detach().abs() > 0.99).float().mean(),
                "actor_log_det_jacobian": tanh_log_det_jacobian(pre_tanh.detach()).mean(),
                "actor_grad_norm": actor_grad_norm, "alpha_loss": alpha_loss.detach(),
            }

    def update(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """One SAC/DrQ update on a replay batch (see ``DrQV2Agent.update`` for the fields). Returns 0-dim metric
        tensors on the device (no host sync). Actor metrics come from the latest actor step (evaluated without a step
        on the very first call if that is not an actor step)."""
        check_batch(batch, self.obs_shape, self.action_shape[0])
        tensors = to_device_batch(batch, self.device)
        key = (step % self.actor_update_every_steps == 0, step % self.critic_target_update_every_steps == 0)
        if self.graphed_update is not None:
            metrics = dict(self.graphed_update(key, tensors, {}))
        else:
            metrics = self.update_tensors(key, *tensors)
        if key[0]:
            self._actor_metrics = {k: v for k, v in metrics.items() if k.startswith(("actor_", "alpha_"))}
        else:
            if self._actor_metrics is None:  # the first call is not an actor step: evaluate the actor, no step
                with torch.no_grad(), self.autocast():
                    features = self.encoder(random_shift(tensors[0], AUG_PAD))
                self._actor_metrics = self.update_actor_and_alpha(features, train=False)
            metrics.update(self._actor_metrics)
        return metrics

    def update_tensors(self, key: tuple[bool, bool], obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                       discount: torch.Tensor, next_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The update on device tensors (what a CUDA graph records). ``key = (actor step?, target update?)``. Returns
        the critic's metrics, ``alpha`` and ``target_entropy``, plus the actor's (``actor_*``, ``alpha_loss``) on actor
        steps."""
        b = obs.shape[0]
        obs_aug, features, next_features, target_next_features = self.encode(obs, next_obs)
        metrics = self.update_critic(features, action, reward, discount, next_features, target_next_features)
        if key[0]:
            if self.target_encoder is not None:  # DrQ: the actor sees the first shift through the updated encoder
                with torch.no_grad(), self.autocast():
                    actor_features = self.encoder(obs_aug[:b])
            else:  # DrQ-v2's layout: the features from before the critic step
                actor_features = features[:b]
            metrics.update(self.update_actor_and_alpha(actor_features))
        if key[1]:
            soft_update_(self.critic_target, self.critic, self.critic_target_tau)
            if self.target_encoder is not None:
                soft_update_(self.target_encoder, self.encoder, self.critic_target_tau)
        metrics["alpha"] = self.log_alpha.detach().exp()
        metrics["target_entropy"] = self._target_entropy_metric
        return metrics

    # ---------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Networks (``target_encoder`` only when there is one), optimisers and ``log_alpha`` (tensors and plain
        containers: weights_only-safe)."""
        state = {"encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(),
                 "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                 "log_alpha": self.log_alpha.detach().clone(), "critic_opt": self.critic_opt.state_dict(),
                 "actor_opt": self.actor_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict()}
        if self.target_encoder is not None:
            state["target_encoder"] = self.target_encoder.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected and set(state) ^ expected == {"target_encoder"}:  # only the target encoder differs
            saved = "target_encoder" in state
            raise ValueError(f"{self.name} state_dict: it was saved {'with' if saved else 'without'} a target encoder "
                             f"and this agent has {'none' if saved else 'one'}: use "
                             f"agent.target_encoder={str(saved).lower()}")
        if set(state) != expected:
            raise ValueError(f"{self.name} state_dict: expected keys {sorted(expected)}, got {sorted(state)}")
        keys = ["encoder", "actor", "critic", "critic_target", "critic_opt", "actor_opt", "alpha_opt"]
        for key in keys + (["target_encoder"] if self.target_encoder is not None else []):
            getattr(self, key).load_state_dict(state[key])
        if self.graphed_update is not None:  # the graphs point at the replaced optimiser state: capture anew
            self.graphed_update.reset()
        with torch.no_grad():
            self.log_alpha.copy_(torch.as_tensor(state["log_alpha"], dtype=self.log_alpha.dtype))
