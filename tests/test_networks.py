"""Encoder / Critic / actors: shapes, the input normalisation, init and the log-std bounds."""

import pytest
import torch
import torch.nn.functional as F

from drq.agents import make_agent
from drq.agents.distributions import ClippedNormal, TanhNormal
from drq.agents.networks import Critic, DrQV2Actor, Encoder, SACActor


def reference_encoder(enc: Encoder, obs: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's forward written out: obs / 255 - 0.5, four convs with ReLU, flattened in (H, W, C) order."""
    x = obs.double() / 255.0 - 0.5
    convs = [enc.conv1] + [m for m in enc.convs if isinstance(m, torch.nn.Conv2d)]
    for i, conv in enumerate(convs):
        x = F.relu(F.conv2d(x, conv.weight.double(), conv.bias.double(), stride=2 if i == 0 else 1))
    return x.permute(0, 2, 3, 1).flatten(1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_encoder_matches_reference_forward(channels_last):
    torch.manual_seed(0)
    enc = Encoder((9, 84, 84), channels_last=channels_last)
    with torch.no_grad():
        for p in enc.parameters():  # non-zero biases so the folded normalisation is exercised
            p.add_(0.05 * torch.randn_like(p))
    obs = torch.randint(0, 256, (3, 9, 84, 84), dtype=torch.uint8)
    out = enc(obs)
    assert enc.repr_dim == 32 * 35 * 35 and out.shape == (3, 32 * 35 * 35) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_encoder(enc, obs), atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = enc(obs)
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.double(), reference_encoder(enc, obs), atol=0.05, rtol=0.05)


def test_encoder_channels_last_equivalence_and_gradients():
    torch.manual_seed(0)
    a, b = Encoder((6, 64, 64), channels_last=False), Encoder((6, 64, 64), channels_last=True)
    b.load_state_dict(a.state_dict())
    obs = torch.randint(0, 256, (2, 6, 64, 64), dtype=torch.uint8)
    out_a, out_b = a(obs), b(obs)
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-3, rtol=1e-3)


def test_orthogonal_init_and_zero_bias():
    torch.manual_seed(0)
    critic = Critic(500, 3, feature_dim=50, hidden_dim=64)
    w = critic.trunk[0].weight  # (50, 500): orthonormal rows
    torch.testing.assert_close(w @ w.T, torch.eye(50), atol=1e-5, rtol=0)
    assert critic.q1[0].bias.abs().max() == 0
    enc = Encoder((9, 84, 84))
    w = enc.conv1.weight.reshape(32, -1)
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(32), atol=1e-4, rtol=0)  # gain sqrt(2) for ReLU


def test_critic_and_actor_shapes():
    torch.manual_seed(0)
    feats, action = torch.randn(5, 300), torch.rand(5, 4) * 2 - 1
    q1, q2 = Critic(300, 4, 20, 32)(feats, action)
    assert q1.shape == q2.shape == (5, 1) and not torch.equal(q1, q2)
    dist = DrQV2Actor(300, 4, 20, 32)(feats, 0.3)
    assert isinstance(dist, ClippedNormal) and dist.mean.shape == (5, 4)
    torch.testing.assert_close(dist.mean, torch.tanh(dist.pre_tanh_mean))
    assert (dist.scale == 0.3).all()
    sac = SACActor(300, 4, 20, 32)(feats)
    assert isinstance(sac, TanhNormal) and sac.loc.shape == (5, 4)


def test_sac_log_std_is_bounded():
    actor = SACActor(10, 2, 8, 16, log_std_bounds=(-10.0, 2.0))
    with torch.no_grad():
        actor.policy[-1].bias.copy_(torch.tensor([0.0, 0.0, 1e4, -1e4]))  # raw log-std far beyond both bounds
    dist = actor(torch.zeros(1, 10))
    torch.testing.assert_close(dist.scale.log(), torch.tensor([[2.0, -10.0]]), atol=1e-5, rtol=0)
    with torch.no_grad():
        actor.policy[-1].bias.zero_()
    mid = actor(torch.zeros(1, 10)).scale.log()  # tanh(0) = 0 -> the middle of the range
    torch.testing.assert_close(mid, torch.full((1, 2), -4.0), atol=1e-5, rtol=0)


def test_bad_shapes():
    """Shapes are checked where an agent is made (``drq.agents.core.check_shapes``); the frame size (>= 15) and
    ``log_std_bounds`` are values the config schema checks (tests/test_agents.py, ``test_the_schema_rejects_*``)."""
    with pytest.raises(ValueError, match=r"obs_shape must be \(C, H, W\).*\(84, 84\)"):
        make_agent("drqv2", (84, 84), (2,))
    with pytest.raises(ValueError, match=r"action_shape must be \(A,\).*\(2, 1\)"):
        make_agent("sac", (9, 16, 16), (2, 1))


def test_output_heads_stay_float32_under_bf16_autocast():
    """Q values and pre-tanh means must not be rounded to bf16's 8 significant bits."""
    from drq.agents.networks import Critic

    torch.manual_seed(0)
    critic = Critic(repr_dim=64, action_dim=2, feature_dim=8, hidden_dim=16)
    with torch.no_grad():
        critic.q1[-1].bias.fill_(150.0)  # a typical Q scale, where bf16's spacing is 1.0
        critic.q1[-1].weight.mul_(1e-3)
    features, action = torch.randn(4, 64), torch.rand(4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q1, _ = critic(features, action)
    assert q1.dtype == torch.float32
    assert not torch.equal(q1, q1.to(torch.bfloat16).float())  # carries more than bf16's precision
