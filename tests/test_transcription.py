"""Whole updates of our agents against plain transcriptions of the papers' update code.

The references below are written the way denisyarats/drq (``drq.py``, DrQ's SAC) and facebookresearch/drqv2
(``drqv2.py``) write their updates, independently of ``drq/``: float frames, replicate-pad and crop one sample at a
time, the ``/255 - 0.5`` normalisation as its own step, convolutions in NCHW flattened in (C, H, W) order, separate
default Adam optimisers (not fused), ``torch.distributions`` for the tanh-Gaussian, ``torch.min`` targets, DrQ's
average of ``K = 2`` targets and sum of ``M = 2`` losses, a per-parameter soft update, the temperature loss.

Each test starts a reference from our agent's initial weights (the first Linear of each trunk permuted from our
(H, W, C) flatten order to (C, H, W)), feeds both the same batches, the same augmentation shifts and the same policy
noise (through the agents' ``noise`` seam, ``drq.agents.core.NoiseFn``), runs 4 updates (SAC: agent steps 10..13,
so the actor, the temperature and the targets step on two of them, DrQ's every-2-steps cadence) and requires, after
every update, every parameter, every Adam moment (``exp_avg``, ``exp_avg_sq``) and every logged loss of ours to equal
the reference's in fp32: ``|ours - ref| <= RTOL * |ref| + ATOL_SCALE * max|ref|`` per tensor (RTOL 1e-5, ATOL_SCALE
2e-5), the slack covering summation order (fused Adam, channels_last convs, the folded normalisation). SAC's updates
must also leave torch's generator untouched: every random number of the update came through the seam.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from drq.agents import make_agent

OBS_SHAPE, A, B = (9, 24, 24), 2, 5
FEATURE_DIM, HIDDEN_DIM, PAD = 8, 16, 4
RTOL, ATOL_SCALE = 1e-5, 2e-5  # the worst tensor here used 0.8 of (1e-5, 1e-5): doubled the scale term for other CPUs
DRQV2_STD, DRQV2_CLIP = 0.7, 0.3  # a std at which the target-noise clip bites on about two thirds of the draws
SAC_STEPS = range(10, 14)


class Batch(NamedTuple):
    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor


def make_batch(g: torch.Generator) -> Batch:
    obs = torch.randint(0, 256, (B, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    next_obs = torch.randint(0, 256, (B, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    action = torch.rand(B, A, generator=g) * 2 - 1
    reward = torch.rand(B, 1, generator=g) * 2
    discount = torch.tensor([0.99, 0.0, 0.99, 0.5, 0.99]).view(B, 1)
    return Batch(obs, action, reward, discount, next_obs)


def make_draws(g: torch.Generator, m: int, k: int, actor: bool) -> dict[str, torch.Tensor]:
    """The random numbers of one update, by the names of the agents' ``noise`` seam."""
    draws = {"obs_shift": torch.randint(0, 2 * PAD + 1, (m * B, 2), generator=g),
             "next_obs_shift": torch.randint(0, 2 * PAD + 1, (k * B, 2), generator=g),
             "next_action_eps": torch.randn(k * B, A, generator=g)}
    if actor:
        draws["actor_eps"] = torch.randn(B, A, generator=g)
    return draws


# ------------------------------------------------------------------------------------------------------------------
# The reference: networks of the same architecture, written plainly
# ------------------------------------------------------------------------------------------------------------------
def shift_crop(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Float frames ``(n, C, H, W)``: replicate-pad by 4, crop each sample at its corner ``(dx, dy)``."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="replicate")
    return torch.stack([padded[i, :, int(dy):int(dy) + h, int(dx):int(dx) + w]
                        for i, (dx, dy) in enumerate(shifts.tolist())])


class RefConvs(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c, 32, 3, stride=2), nn.Conv2d(32, 32, 3, stride=1),
                                    nn.Conv2d(32, 32, 3, stride=1), nn.Conv2d(32, 32, 3, stride=1)])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = obs / 255.0 - 0.5
        for conv in self.convs:
            h = torch.relu(conv(h))
        return h.reshape(h.shape[0], -1)  # (C, H, W) order


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, o))


def head(repr_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(repr_dim, FEATURE_DIM), nn.LayerNorm(FEATURE_DIM), nn.Tanh())


class RefCritic(nn.Module):
    def __init__(self, repr_dim: int):
        super().__init__()
        self.trunk = head(repr_dim)
        self.q1, self.q2 = mlp(FEATURE_DIM + A, HIDDEN_DIM, 1), mlp(FEATURE_DIM + A, HIDDEN_DIM, 1)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x), self.q2(x)


class RefActor(nn.Module):
    def __init__(self, repr_dim: int, out: int):
        super().__init__()
        self.trunk, self.policy = head(repr_dim), mlp(FEATURE_DIM, HIDDEN_DIM, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(h))


def flat_perm(weight: torch.Tensor, to_ref: bool) -> torch.Tensor:
    """A trunk's first Linear weight ``(F, 32 h w)`` between our (H, W, C) and the reference's (C, H, W) order."""
    f, n = weight.shape
    side = int(math.isqrt(n // 32))
    if to_ref:
        return weight.reshape(f, side, side, 32).permute(0, 3, 1, 2).reshape(f, n)
    return weight.reshape(f, 32, side, side).permute(0, 2, 3, 1).reshape(f, n)


def param_pairs(agent, ref) -> list[tuple[str, torch.Tensor, torch.Tensor, bool]]:
    """``(name, ours, reference's, permuted?)`` for every parameter (targets included) of ``agent``."""
    def encoder_pairs(ours, theirs, prefix):
        our_convs = [ours.conv1, ours.convs[1], ours.convs[3], ours.convs[5]]
        return [(f"{prefix}.conv{i}.{n}", getattr(a, n), getattr(b, n), False)
                for i, (a, b) in enumerate(zip(our_convs, theirs.convs)) for n in ("weight", "bias")]

    def net_pairs(ours, theirs, prefix):
        theirs = dict(theirs.named_parameters())
        return [(f"{prefix}.{n}", p, theirs[n], n == "trunk.0.weight") for n, p in ours.named_parameters()]

    pairs = encoder_pairs(agent.encoder, ref.encoder, "encoder")
    if getattr(agent, "target_encoder", None) is not None:
        pairs += encoder_pairs(agent.target_encoder, ref.target_encoder, "target_encoder")
    for name in ("critic", "critic_target", "actor"):
        pairs += net_pairs(getattr(agent, name), getattr(ref, name), name)
    if hasattr(agent, "log_alpha"):
        pairs.append(("log_alpha", agent.log_alpha, ref.log_alpha, False))
    return pairs


def load_from(agent, ref) -> None:
    with torch.no_grad():
        for _, ours, theirs, permuted in param_pairs(agent, ref):
            theirs.copy_(flat_perm(ours, True) if permuted else ours)


def close(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    ours, ref = ours.detach().float(), ref.detach().float()
    assert ours.shape == ref.shape, name
    tol = RTOL * ref.abs() + ATOL_SCALE * ref.abs().max().clamp_min(1e-12)
    worst = ((ours - ref).abs() - tol).max()
    assert worst <= 0, f"{name}: max |ours - ref| = {(ours - ref).abs().max():.3g} (max |ref| {ref.abs().max():.3g})"


def check_state(agent, ref, metrics: dict[str, torch.Tensor], ref_metrics: dict[str, torch.Tensor]) -> None:
    for key, value in ref_metrics.items():
        close(f"metric {key}", metrics[key], value)
    our_opts = [agent.critic_opt, agent.actor_opt] + ([agent.alpha_opt] if hasattr(agent, "alpha_opt") else [])
    for name, ours, theirs, permuted in param_pairs(agent, ref):
        close(name, flat_perm(ours, True) if permuted else ours, theirs)
        our_state = next((o.state[ours] for o in our_opts if ours in o.state), None)
        ref_state = next((o.state[theirs] for o in ref.optimizers if theirs in o.state), None)
        assert (our_state is None) == (ref_state is None), f"{name}: optimiser state in one implementation only"
        if our_state is None:
            continue
        assert int(our_state["step"]) == int(ref_state["step"]), f"{name}: Adam step count"
        for moment in ("exp_avg", "exp_avg_sq"):
            value = our_state[moment].reshape(ours.shape)
            close(f"{name} {moment}", flat_perm(value, True) if permuted else value, ref_state[moment])


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=LR, foreach=False, fused=False)


# ------------------------------------------------------------------------------------------------------------------
# DrQ-v2 (facebookresearch/drqv2, drqv2.py), transcribed
# ------------------------------------------------------------------------------------------------------------------
LR = 1e-3


class RefDrQV2:
    def __init__(self, repr_dim: int, tau: float = 0.01):
        self.encoder = RefConvs(OBS_SHAPE[0])
        self.critic, self.critic_target = RefCritic(repr_dim), RefCritic(repr_dim)
        self.actor = RefActor(repr_dim, A)
        self.tau = tau
        self.encoder_opt, self.critic_opt = adam(self.encoder.parameters()), adam(self.critic.parameters())
        self.actor_opt = adam(self.actor.parameters())
        self.optimizers = [self.encoder_opt, self.critic_opt, self.actor_opt]

    def sample(self, mu: torch.Tensor, eps: torch.Tensor, clip: float) -> torch.Tensor:
        """drqv2's TruncatedNormal.sample(clip): clipped noise, then the action clamped with a straight-through."""
        noise = torch.clamp(eps * DRQV2_STD, -clip, clip)
        x = mu + noise
        clamped = torch.clamp(x, -1.0 + 1e-6, 1.0 - 1e-6)
        return x - x.detach() + clamped.detach()

    def update(self, batch: Batch, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obs = shift_crop(batch.obs.float(), draws["obs_shift"])
        next_obs = shift_crop(batch.next_obs.float(), draws["next_obs_shift"])
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        # update_critic
        with torch.no_grad():
            next_action = self.sample(torch.tanh(self.actor(next_obs)), draws["next_action_eps"], DRQV2_CLIP)
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
        action = self.sample(torch.tanh(self.actor(obs)), draws["actor_eps"], DRQV2_CLIP)
        q1_pi, q2_pi = self.critic(obs, action)
        actor_loss = -torch.min(q1_pi, q2_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        # soft update, one parameter at a time
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.data.copy_(self.tau * p.data + (1 - self.tau) * tp.data)
        return {"critic_loss": critic_loss, "critic_q1": q1.mean(), "critic_q2": q2.mean(),
                "critic_target_q": target_q.mean(), "actor_loss": actor_loss}


# ------------------------------------------------------------------------------------------------------------------
# DrQ's SAC (denisyarats/drq, drq.py), transcribed; target_encoder=False swaps in DrQ-v2's layout
# ------------------------------------------------------------------------------------------------------------------
class RefDrQ:
    """``critic`` is DrQ's critic minus its conv encoder (the trunk is DrQ's encoder head), the actor's own head is
    its trunk, and the convs are shared (DrQ ties the actor's convs to the critic's)."""

    def __init__(self, repr_dim: int, target_encoder: bool, tau: float = 0.01, init_temperature: float = 0.1):
        self.encoder = RefConvs(OBS_SHAPE[0])
        self.critic, self.actor = RefCritic(repr_dim), RefActor(repr_dim, 2 * A)
        self.critic_target = copy.deepcopy(self.critic)
        self.target_encoder = copy.deepcopy(self.encoder) if target_encoder else None
        self.tau, self.target_entropy = tau, -A
        self.log_alpha = torch.tensor(math.log(init_temperature), requires_grad=True)
        self.critic_opt = adam(list(self.encoder.parameters()) + list(self.critic.parameters()))
        self.actor_opt = adam(self.actor.parameters())
        self.log_alpha_opt = adam([self.log_alpha])
        self.optimizers = [self.critic_opt, self.actor_opt, self.log_alpha_opt]

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, h: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DrQ's SquashedNormal: ``rsample`` with the given noise, ``log_prob`` summed over the action."""
        mu, log_std = self.actor(h).chunk(2, dim=-1)
        log_std = -10 + 0.5 * (2 - (-10)) * (torch.tanh(log_std) + 1)
        tanh = TanhTransform(cache_size=1)
        dist = TransformedDistribution(Normal(mu, log_std.exp()), [tanh])
        action = tanh(mu + log_std.exp() * eps)  # caches the pre-tanh value for log_prob
        return action, dist.log_prob(action).sum(-1, keepdim=True)

    def target_features(self, next_obs: torch.Tensor) -> torch.Tensor:
        encoder = self.target_encoder if self.target_encoder is not None else self.encoder
        return encoder(next_obs)

    def update(self, batch: Batch, draws: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        obs_all = shift_crop(batch.obs.float().repeat(2, 1, 1, 1), draws["obs_shift"])  # obs, obs_aug
        next_all = shift_crop(batch.next_obs.float().repeat(2, 1, 1, 1), draws["next_obs_shift"])
        obs, obs_aug = obs_all[:B], obs_all[B:]
        next_obs, next_obs_aug = next_all[:B], next_all[B:]
        eps, eps_aug = draws["next_action_eps"][:B], draws["next_action_eps"][B:]
        # update_critic
        with torch.no_grad():
            targets = []
            for x, e in ((next_obs, eps), (next_obs_aug, eps_aug)):
                next_action, log_prob = self.policy(self.encoder(x), e)
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
        metrics = {"critic_loss": critic_loss, "critic_target_q": target_q.mean()}
        # update_actor_and_alpha: DrQ re-encodes obs with the updated convs (detached); DrQ-v2's layout reuses h
        if step % 2 == 0:
            features = self.encoder(obs).detach() if self.target_encoder is not None else h.detach()
            action, log_prob = self.policy(features, draws["actor_eps"])
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
        if step % 2 == 0:
            pairs = [(self.critic, self.critic_target)]
            if self.target_encoder is not None:
                pairs.append((self.encoder, self.target_encoder))
            with torch.no_grad():
                for net, target in pairs:
                    for p, tp in zip(net.parameters(), target.parameters()):
                        tp.data.copy_(self.tau * p.data + (1 - self.tau) * tp.data)
        metrics["alpha"] = self.alpha
        return metrics


# ------------------------------------------------------------------------------------------------------------------
def run_against_reference(agent, ref, updates: int, m: int, k: int, ref_update: Callable, steps) -> None:
    load_from(agent, ref)
    g = torch.Generator().manual_seed(1234)
    current: dict[str, torch.Tensor] = {}

    def noise(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        assert tuple(current[name].shape) == shape, name
        return current[name]

    agent.noise = noise
    check_state(agent, ref, {}, {})
    for step in list(steps)[:updates]:
        batch = make_batch(g)
        current.clear()
        current.update(make_draws(g, m, k, actor=True))
        rng = torch.get_rng_state()
        metrics = agent.update(batch, step)
        if agent.name == "sac":  # DrQ-v2 draws one more sample for its actor metrics (not part of the update)
            assert torch.equal(rng, torch.get_rng_state()), "the update drew random numbers outside the noise seam"
        ref_metrics = ref_update(batch, dict(current), step)
        check_state(agent, ref, metrics, ref_metrics)


def make_ours(name: str, **cfg):
    torch.manual_seed(0)
    return make_agent(name, OBS_SHAPE, (A,), "cpu", "fp32", lr=LR, feature_dim=FEATURE_DIM, hidden_dim=HIDDEN_DIM,
                      **cfg)


def test_drqv2_update_equals_the_transcription():
    agent = make_ours("drqv2", stddev_schedule=DRQV2_STD, stddev_clip=DRQV2_CLIP)
    ref = RefDrQV2(agent.encoder.repr_dim)
    run_against_reference(agent, ref, 4, 1, 1, lambda batch, draws, step: ref.update(batch, draws), range(4))


@pytest.mark.parametrize("target_encoder", [True, False])
def test_sac_update_equals_the_transcription(target_encoder):
    agent = make_ours("sac", target_encoder=target_encoder)
    assert (agent.target_encoder is not None) == target_encoder
    ref = RefDrQ(agent.encoder.repr_dim, target_encoder)
    run_against_reference(agent, ref, 4, 2, 2, ref.update, SAC_STEPS)


def test_the_transcription_check_can_fail():
    """A one-ulp-scale change passes, a wrong target update does not (the comparison is not vacuous)."""
    agent = make_ours("sac", target_encoder=True)
    ref = RefDrQ(agent.encoder.repr_dim, True)
    ref.tau = 0.02
    with pytest.raises(AssertionError, match="critic_target|target_encoder"):
        run_against_reference(agent, ref, 4, 2, 2, ref.update, SAC_STEPS)
