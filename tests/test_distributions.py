"""TanhNormal and ClippedNormal against independent references (torch.distributions, numeric integration, MC)."""

import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from drq.agents.distributions import (ClippedNormal, TanhNormal, expected_tanh_log_det_jacobian, log_one_minus_tanh_sq,
                               tanh_log_det_jacobian)

F64 = torch.float64


def reference_log_prob(loc, scale, u):
    """torch's own tanh-squashed Gaussian, evaluated at the pre-tanh values u (through the transform's cache)."""
    transform = TanhTransform(cache_size=1)
    dist = TransformedDistribution(Normal(loc, scale), [transform])
    action = transform(u)  # caches u, so log_prob(action) uses exactly these pre-tanh values
    return dist.log_prob(action).sum(-1)


def test_log_prob_matches_transformed_distribution_up_to_u_20():
    torch.manual_seed(0)
    u = torch.linspace(-20, 20, 401, dtype=F64).reshape(-1, 1).repeat(1, 3)
    u[:, 1] = u[:, 1].flip(0) * 0.5
    loc = torch.randn(401, 3, dtype=F64) * 3
    scale = torch.rand(401, 3, dtype=F64) * 3 + 0.05
    dist = TanhNormal(loc, scale)
    ours = dist.log_prob(torch.tanh(u), pre_tanh=u)
    ref = reference_log_prob(loc, scale, u)
    assert ours.shape == (401,)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # The uncorrected Gaussian log-prob is a different function: off by the Jacobian term (up to ~2*20*3 nats here).
    uncorrected = Normal(loc, scale).log_prob(u).sum(-1)
    gap = (uncorrected - ref).abs()
    assert gap.max() > 90 and (gap > 1).float().mean() > 0.8


def test_log_prob_from_action_only_matches_reference_and_is_finite_at_the_bounds():
    loc = torch.tensor([[0.3, -1.0]], dtype=F64)
    scale = torch.tensor([[0.7, 0.4]], dtype=F64)
    u = torch.tensor([[1.2, -2.5]], dtype=F64)
    dist = TanhNormal(loc, scale)
    torch.testing.assert_close(dist.log_prob(torch.tanh(u)), reference_log_prob(loc, scale, u), atol=1e-9, rtol=0)
    for dtype in (torch.float32, F64):
        loc_g = torch.zeros(2, 2, dtype=dtype, requires_grad=True)
        d = TanhNormal(loc_g, torch.ones(2, 2, dtype=dtype))
        lp = d.log_prob(torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=dtype))
        assert torch.isfinite(lp).all()
        lp.sum().backward()
        assert torch.isfinite(loc_g.grad).all()


@pytest.mark.parametrize("loc,scale", [(0.0, 1.0), (0.5, 0.3), (2.0, 1.5), (-1.0, 0.05), (0.0, math.exp(2)),
                                       (-20.0, 0.5), (3.0, math.exp(-5))])
def test_density_integrates_to_one(loc, scale):
    # Substitute a = tanh(u): int_{-1}^{1} pi(a) da = int pi(tanh u) sech^2(u) du (sech^2 computed directly here).
    u = torch.linspace(loc - 12 * scale, loc + 12 * scale, 400_001, dtype=F64)
    dist = TanhNormal(torch.tensor([loc], dtype=F64), torch.tensor([scale], dtype=F64))
    density_a = dist.log_prob(torch.tanh(u)[:, None], pre_tanh=u[:, None]).exp()
    total = torch.trapezoid(density_a / torch.cosh(u) ** 2, u)
    assert abs(total.item() - 1.0) < 1e-4


def test_density_integrates_to_one_in_action_space():
    # Directly over a in (-1, 1) with the atanh path (no pre-tanh given); the density vanishes at the bounds here.
    a = torch.linspace(-1, 1, 2_000_001, dtype=F64)[1:-1]
    dist = TanhNormal(torch.tensor([0.3], dtype=F64), torch.tensor([0.6], dtype=F64))
    total = torch.trapezoid(dist.log_prob(a[:, None]).exp(), a)
    assert abs(total.item() - 1.0) < 1e-4


def numeric_entropy(loc, scale):
    """-int p log p over u-space: H[N] + int N(u) log(sech^2 u) du, with log sech^2 u = -2 log cosh u (float64)."""
    u = torch.linspace(loc - 14 * scale, loc + 14 * scale, 200_001, dtype=F64)
    normal = Normal(torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64))
    expected = torch.trapezoid(normal.log_prob(u).exp() * (-2 * torch.log(torch.cosh(u))), u)
    return normal.entropy() + expected


def test_entropy_matches_numeric_integration_for_large_scale_and_mean():
    locs = [0.0, 0.3, -1.0, 2.0, -5.0, 20.0]
    log_scales = [-10.0, -3.0, -1.0, -0.25, 0.0, 1.0, 2.0]
    for loc in locs:
        for ls in log_scales:
            scale = math.exp(ls)
            ours = TanhNormal(torch.tensor([loc], dtype=F64), torch.tensor([scale], dtype=F64)).entropy()
            ref = numeric_entropy(loc, scale)
            assert abs(ours.item() - ref.item()) < 1e-6, (loc, scale, ours.item(), ref.item())
    # float32 agrees to float32 rounding
    ours32 = TanhNormal(torch.tensor([[0.7, -20.0, 1.0]]), torch.tensor([[math.exp(2), 0.3, 0.8]])).entropy()
    ref = sum(numeric_entropy(l, s) for l, s in [(0.7, math.exp(2)), (-20.0, 0.3), (1.0, 0.8)])
    assert abs(ours32.item() - ref.item()) < 1e-4


def test_entropy_matches_monte_carlo_with_10e6_samples():
    loc = torch.tensor([0.5, -1.0, 1.5, -0.7, 0.3], dtype=F64)
    scale = torch.tensor([0.2, 0.3, 0.5, 0.25, 0.1], dtype=F64)
    gen = torch.Generator().manual_seed(1)
    eps = torch.randn(500_000, 5, generator=gen, dtype=F64)
    u = torch.cat([loc + scale * eps, loc - scale * eps])  # 10^6 samples in antithetic pairs
    # H[tanh(u)] = H[u] + E log|d tanh/du|; both from torch.distributions, the expectation by Monte Carlo.
    log_det = TanhTransform().log_abs_det_jacobian(u, torch.tanh(u)).sum(-1)
    pair_means = 0.5 * (log_det[:500_000] + log_det[500_000:])
    mc = Normal(loc, scale).entropy().sum() + pair_means.mean()
    std_err = pair_means.std() / math.sqrt(pair_means.numel())
    assert std_err < 2.5e-4  # so that 1e-3 is a meaningful tolerance
    ours = TanhNormal(loc, scale).entropy()
    assert abs(ours.item() - mc.item()) < 1e-3
    # and the entropy is below the Gaussian's: squashing into (-1, 1) removes entropy
    assert ours < Normal(loc, scale).entropy().sum()


def test_gradients_finite_at_saturation():
    for dtype in (torch.float32, F64):
        loc = torch.tensor([[20.0, -20.0, 0.0]], dtype=dtype, requires_grad=True)
        log_scale = torch.tensor([[-3.0, 2.0, 0.0]], dtype=dtype, requires_grad=True)
        u = torch.tensor([[20.0, -20.0, 20.0]], dtype=dtype, requires_grad=True)
        dist = TanhNormal(loc, log_scale.exp())
        (dist.log_prob(torch.tanh(u), pre_tanh=u) + dist.entropy()).sum().backward()
        for t in (loc, log_scale, u):
            assert torch.isfinite(t.grad).all()
        # reparameterised samples at saturation too
        loc.grad = None
        a, pre = TanhNormal(loc, log_scale.exp()).rsample_with_pre_tanh((4,))
        TanhNormal(loc, log_scale.exp()).log_prob(a, pre).sum().backward()
        assert torch.isfinite(loc.grad).all()


def test_entropy_gradient_matches_finite_differences():
    loc = torch.tensor([0.4, -2.0, 1.0], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.3, 5.0, 1.0], dtype=F64, requires_grad=True)  # both quadrature rules
    TanhNormal(loc, scale).entropy().backward()
    h = 1e-6
    for i in range(3):
        for param, grad in ((loc, loc.grad), (scale, scale.grad)):
            plus, minus = param.detach().clone(), param.detach().clone()
            plus[i] += h
            minus[i] -= h
            args = lambda p: (p, scale.detach()) if param is loc else (loc.detach(), p)  # noqa: E731
            fd = (TanhNormal(*args(plus)).entropy() - TanhNormal(*args(minus)).entropy()) / (2 * h)
            assert abs(fd.item() - grad[i].item()) < 1e-6


def test_jacobian_helpers():
    u = torch.linspace(-18, 18, 1001, dtype=F64)
    torch.testing.assert_close(log_one_minus_tanh_sq(u), -2 * torch.log(torch.cosh(u)), atol=1e-8, rtol=1e-8)
    # the naive form loses everything once tanh(u)^2 rounds to 1
    assert not torch.isfinite(torch.log(1 - torch.tanh(torch.tensor(20.0)) ** 2))
    assert (log_one_minus_tanh_sq(torch.linspace(-50, 50, 10001)) <= 1e-6).all()
    torch.testing.assert_close(tanh_log_det_jacobian(u.reshape(-1, 7)), (-2 * torch.log(torch.cosh(u))).reshape(-1, 7)
                               .sum(-1), atol=1e-8, rtol=1e-8)
    assert expected_tanh_log_det_jacobian(torch.zeros(3), torch.ones(3)).shape == (3,)


def test_shapes_mean_mode_and_bad_scale():
    loc, scale = torch.randn(5, 4, 3), torch.rand(5, 4, 3) + 0.1
    dist = TanhNormal(loc, scale)
    a, u = dist.rsample_with_pre_tanh()
    assert a.shape == u.shape == (5, 4, 3) and (a.abs() < 1).all()
    torch.testing.assert_close(a, torch.tanh(u))
    assert dist.log_prob(a, u).shape == (5, 4) and dist.entropy().shape == (5, 4)
    assert dist.sample((2,)).shape == (2, 5, 4, 3)
    torch.testing.assert_close(dist.mean, torch.tanh(loc))
    torch.testing.assert_close(dist.mode, torch.tanh(loc))
    with pytest.raises(ValueError, match="-0.5"):
        TanhNormal(torch.zeros(2), torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="0.0"):
        TanhNormal(torch.zeros(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="-1"):
        ClippedNormal(torch.zeros(2), -1.0)


# --------------------------------------------------------------------------------------------------------------------
# ClippedNormal (DrQ-v2)
# --------------------------------------------------------------------------------------------------------------------
LOW, HIGH = -1.0 + 1e-6, 1.0 - 1e-6


def bound_masses(loc, scale):
    """P(x = low), P(x = high) of the clipped Gaussian, from erfc (accurate far in the tails)."""
    loc, scale = torch.as_tensor(loc, dtype=F64), torch.as_tensor(scale, dtype=F64)
    p_low = 0.5 * torch.special.erfc((loc - LOW) / (scale * math.sqrt(2)))
    p_high = 0.5 * torch.special.erfc((HIGH - loc) / (scale * math.sqrt(2)))
    return p_low, p_high


def reference_clipped_log_prob(loc, scale, x):
    """Mixed-measure log-prob: torch.distributions.Normal density inside, log of the tail mass at each bound."""
    inside = Normal(loc, scale).log_prob(x)
    p_low, p_high = bound_masses(loc, scale)
    return torch.where(x <= LOW, torch.log(p_low), torch.where(x >= HIGH, torch.log(p_high), inside))


def test_clipped_normal_log_prob_and_normalisation():
    loc = torch.tensor([0.9, -0.3, 0.0], dtype=F64)
    scale = torch.tensor([0.4, 1.0, 0.05], dtype=F64)
    dist = ClippedNormal(loc, scale)
    x = torch.linspace(-1, 1, 200_001, dtype=F64)[:, None].expand(-1, 3)
    per_dim_ref = reference_clipped_log_prob(loc, scale, x)
    torch.testing.assert_close(dist.log_prob(x), per_dim_ref.sum(-1), atol=1e-9, rtol=1e-9)
    # each dimension: interior density + the two atoms = 1
    for i in range(3):
        d1 = ClippedNormal(loc[i:i + 1], scale[i:i + 1])
        xs = torch.linspace(LOW, HIGH, 400_001, dtype=F64)[1:-1, None]
        interior = torch.trapezoid(d1.log_prob(xs).exp(), xs[:, 0])
        atoms = d1.log_prob(torch.tensor([[LOW], [HIGH]], dtype=F64)).exp().sum()
        assert abs((interior + atoms).item() - 1.0) < 1e-5
    # the atom at the upper bound holds the empirical fraction of samples that hit it
    torch.manual_seed(0)
    first = ClippedNormal(loc[:1], scale[:1])
    frac = (first.sample((400_000,)) >= HIGH).double().mean()  # expected ~0.40, std err ~8e-4
    p_high = first.log_prob(torch.tensor([HIGH], dtype=F64)).exp()
    torch.testing.assert_close(p_high, bound_masses(loc[0], scale[0])[1])
    assert abs(frac.item() - p_high.item()) < 4e-3


def numeric_clipped_entropy(loc, scale):
    normal = Normal(torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64))
    x = torch.linspace(LOW, HIGH, 400_001, dtype=F64)
    p = normal.log_prob(x).exp()
    interior = -torch.trapezoid(p * normal.log_prob(x), x)
    p_low, p_high = bound_masses(loc, scale)
    return interior - torch.special.xlogy(p_low, p_low) - torch.special.xlogy(p_high, p_high)


@pytest.mark.parametrize("loc,scale", [(0.0, 0.1), (0.95, 0.3), (-0.5, 1.0), (0.99, 0.05), (0.2, 0.6)])
def test_clipped_normal_entropy_matches_numeric_integration(loc, scale):
    ours = ClippedNormal(torch.tensor([loc], dtype=F64), scale).entropy()
    assert abs(ours.item() - numeric_clipped_entropy(loc, scale).item()) < 1e-6


def test_clipped_normal_entropy_matches_monte_carlo_and_depends_on_the_mean():
    loc = torch.tensor([0.9, -0.2], dtype=F64)
    dist = ClippedNormal(loc, 0.5)
    torch.manual_seed(0)
    x = dist.sample((1_000_000,))
    neg_log_p = -reference_clipped_log_prob(loc, torch.full_like(loc, 0.5), x).sum(-1)
    std_err = neg_log_p.std() / 1000
    assert abs(dist.entropy().item() - neg_log_p.mean().item()) < 5 * std_err
    # unlike DrQ-v2's Normal entropy, ours sees the policy mean approaching the action bound (with a small std the
    # atom at the bound, -P log P >= 0, outweighs the lost negative differential entropy: it goes *up*)
    near, far = ClippedNormal(torch.tensor([0.99]), 0.2), ClippedNormal(torch.tensor([0.0]), 0.2)
    torch.testing.assert_close(near.gaussian_entropy(), far.gaussian_entropy())
    assert near.entropy() > far.entropy() + 0.3
    torch.testing.assert_close(far.entropy(), far.gaussian_entropy(), atol=1e-5, rtol=0)


def test_clipped_normal_sampling_clip_and_straight_through_gradient():
    loc = torch.tensor([[0.95, -0.1, 0.0]], requires_grad=True)
    dist = ClippedNormal(loc.expand(10_000, 3), 1.0)
    x = dist.rsample(clip=0.3)
    assert (x >= LOW).all() and (x <= HIGH).all()
    assert ((x - loc).abs() <= 0.3 + 1e-6).all()
    x.sum().backward()
    torch.testing.assert_close(loc.grad, torch.full((1, 3), 10_000.0))  # gradient 1 even where clipped
    assert ((dist.sample() - loc).abs() > 0.5).any()  # without clip the noise is not bounded
    lp = ClippedNormal(torch.tensor([[0.999]], requires_grad=True), 1e-3).log_prob(torch.tensor([[HIGH]]))
    assert torch.isfinite(lp).all()
