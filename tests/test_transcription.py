"""Whole updates of our agents against plain transcriptions of the papers' update code (tests/reference/updates.py).

The references are written the way denisyarats/drq (``drq.py``, DrQ's SAC) and facebookresearch/drqv2 (``drqv2.py``)
write their updates, independently of ``drq/`` (see tests/reference/updates.py): float frames, replicate-pad and crop
one sample at a time, the ``/255 - 0.5`` normalisation as its own step, convolutions in NCHW flattened in (C, H, W)
order, separate default Adam optimisers (not fused), ``torch.distributions`` for the tanh-Gaussian, ``torch.min``
targets, DrQ's average of ``K = 2`` targets and sum of ``M = 2`` losses, a per-parameter soft update, the temperature
loss. The benches time ours against the same references.

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

import math
from typing import NamedTuple

import pytest
import torch

from drq.agents import make_agent
from tests.reference.updates import PAD, DrQReference, DrQV2Reference

OBS_SHAPE, A, B = (9, 24, 24), 2, 5
FEATURE_DIM, HIDDEN_DIM = 8, 16
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


# ------------------------------------------------------------------------------------------------------------------
def run_against_reference(agent, ref, updates: int, m: int, k: int, steps) -> None:
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
        ref_metrics = ref.update(batch, step, dict(current))
        check_state(agent, ref, metrics, ref_metrics)


LR = 1e-3


def make_ours(name: str, **cfg):
    torch.manual_seed(0)
    return make_agent(name, OBS_SHAPE, (A,), "cpu", "fp32", lr=LR, feature_dim=FEATURE_DIM, hidden_dim=HIDDEN_DIM,
                      **cfg)


def test_drqv2_update_equals_the_transcription():
    agent = make_ours("drqv2", stddev_schedule=DRQV2_STD, stddev_clip=DRQV2_CLIP)
    ref = DrQV2Reference(OBS_SHAPE, A, FEATURE_DIM, HIDDEN_DIM, lr=LR, std=DRQV2_STD, stddev_clip=DRQV2_CLIP)
    run_against_reference(agent, ref, 4, 1, 1, range(4))


@pytest.mark.parametrize("target_encoder", [True, False])
def test_sac_update_equals_the_transcription(target_encoder):
    agent = make_ours("sac", target_encoder=target_encoder)
    assert (agent.target_encoder is not None) == target_encoder
    ref = DrQReference(OBS_SHAPE, A, FEATURE_DIM, HIDDEN_DIM, lr=LR, target_encoder=target_encoder)
    run_against_reference(agent, ref, 4, 2, 2, SAC_STEPS)


def test_the_transcription_check_can_fail():
    """A one-ulp-scale change passes, a wrong target update does not (the comparison is not vacuous)."""
    agent = make_ours("sac", target_encoder=True)
    ref = DrQReference(OBS_SHAPE, A, FEATURE_DIM, HIDDEN_DIM, lr=LR, target_encoder=True)
    ref.tau = 0.02
    with pytest.raises(AssertionError, match="critic_target|target_encoder"):
        run_against_reference(agent, ref, 4, 2, 2, SAC_STEPS)


@pytest.mark.parametrize("reference", [DrQV2Reference, DrQReference])
def test_the_references_draw_their_own_noise_as_the_benches_use_them(reference):
    torch.manual_seed(0)
    ref = reference(OBS_SHAPE, A, FEATURE_DIM, HIDDEN_DIM)
    metrics = ref.update(make_batch(torch.Generator().manual_seed(0)), 0)
    assert {"critic_loss", "actor_loss"} <= set(metrics) and all(torch.isfinite(v) for v in metrics.values())
