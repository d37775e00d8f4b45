"""Policy distributions: the tanh-squashed Gaussian (SAC) and the clipped Gaussian (DrQ-v2).

Notation: ``A`` is the action dimension; every distribution here has event shape ``(A,)`` and reports log-probabilities
and entropies summed over the action dimensions, with shape ``(...)`` for parameters of shape ``(..., A)``.

Tanh-squashed Gaussian
    u ~ N(mu, sigma^2) (the *pre-tanh* value), a = tanh(u) in (-1, 1). By the change of variables formula
        log pi(a) = sum_i [ log N(u_i | mu_i, sigma_i) - log(1 - tanh^2 u_i) ],
    with the Jacobian term in the stable form  log(1 - tanh^2 u) = 2 (log 2 - u - softplus(-2 u))  (<= 0), and
        H[pi] = H[N(mu, sigma^2)] + sum_i E[ log(1 - tanh^2 u_i) ]
    (the squashing only ever *removes* entropy). The expectation is a 1-D Gaussian integral per dimension, computed
    deterministically by quadrature (see ``expected_tanh_log_det_jacobian``), so ``entropy()`` is differentiable and
    free of sampling noise.

Clipped Gaussian (DrQ-v2's policy)
    x = clip(mu + sigma * eps, low, high), eps ~ N(0, 1). See ``ClippedNormal`` for what its log-prob and entropy are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

__all__ = [
    "TanhNormal",
    "ClippedNormal",
    "tanh_log_det_jacobian",
    "log_one_minus_tanh_sq",
    "expected_tanh_log_det_jacobian",
]

_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_one_minus_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``: stable for any real u, <= 0 up to rounding.

    ``u`` is the pre-tanh value (any shape); the result has the same shape. Its gradient is ``-2 tanh(u)``, finite
    everywhere.
    """
    return 2.0 * (_LOG2 - u - F.softplus(-2.0 * u))


def tanh_log_det_jacobian(u: torch.Tensor) -> torch.Tensor:
    """``log |det da/du|`` of ``a = tanh(u)``: ``sum_i log(1 - tanh^2 u_i)`` over the last dim, ``(...)``; <= 0."""
    return log_one_minus_tanh_sq(u).sum(-1)


# ---------------------------------------------------------------------------------------------------------------------
# E[log(1 - tanh^2 u)] for u ~ N(mu, sigma^2), per dimension.
#
# Two deterministic rules, each used where it is accurate (measured against adaptive quadrature in float64 over
# mu in [0, 20] (the integrand is even in mu), log sigma in [-10, 2]):
#   * sigma <  _SIGMA_SPLIT: Gauss-Hermite with _N_HERMITE nodes on g(u) = log(1 - tanh^2 u). The integrand is analytic
#     in the strip |Im u| < pi/2, which is wide on the scale of sigma, so the rule converges fast: max abs error
#     < 1e-11 for log sigma <= -0.5.
#   * sigma >= _SIGMA_SPLIT: g(u) = 2 log 2 - 2|u| - 2 s(|u|) with s(t) = log(1 + exp(-2t)). E|u| is the folded-normal
#     mean (closed form); E s(|u|) = int_0^inf s(t) [N(t) + N(-t)] dt is a Gauss-Laguerre rule with weight exp(-2t)
#     (s(t) exp(2t) -> 1 is smooth), whose integrand is smooth on the scale of sigma: max abs error < 1e-11 for
#     log sigma >= 0 (< 1e-13 for sigma >= e).
#   At the split (sigma = e^-0.25) both rules are within 1e-9 of the reference, so the result is accurate to about
#   1e-9 per dimension in float64 everywhere in that range, and to float32 rounding (~1e-6 relative) in float32.
#   A single Gauss-Hermite rule would need > 200 nodes for 1e-3 at sigma = e^2 (its error is 2e-2 with 64 nodes).
# ---------------------------------------------------------------------------------------------------------------------
_N_HERMITE = 32
_N_LAGUERRE = 32
_SIGMA_SPLIT = math.exp(-0.25)


def _hermite_rule() -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite.hermgauss(_N_HERMITE)
    return math.sqrt(2.0) * x, w / math.sqrt(math.pi)  # E f(z), z ~ N(0,1)  =  sum_k w_k f(x_k)


def _laguerre_rule() -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.laguerre.laggauss(_N_LAGUERRE)
    t = x / 2.0  # int_0^inf s(t) G(t) dt = 1/2 sum_k w_k e^{x_k} s(x_k / 2) G(x_k / 2), with s(x/2) = log1p(e^{-x})
    weights = 0.5 * w * np.exp(x) * np.log1p(np.exp(-x))
    return t, weights


_HERMITE_X, _HERMITE_W = _hermite_rule()
_LAGUERRE_T, _LAGUERRE_W = _laguerre_rule()
_RULE_CACHE: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}


def _rules(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    key = (dtype, device)
    if key not in _RULE_CACHE:
        _RULE_CACHE[key] = tuple(
            torch.as_tensor(v, dtype=dtype, device=device) for v in (_HERMITE_X, _HERMITE_W, _LAGUERRE_T, _LAGUERRE_W)
        )
    return _RULE_CACHE[key]


def expected_tanh_log_det_jacobian(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``E[log(1 - tanh^2 u)]`` for ``u ~ N(loc, scale^2)``, elementwise (shape of ``loc``/``scale``), <= 0.

    Deterministic and differentiable in ``loc`` and ``scale`` (see the accuracy notes above this function).
    """
    loc, scale = torch.broadcast_tensors(loc, scale)
    hx, hw, lt, lw = _rules(loc.dtype, loc.device)
    small = scale < _SIGMA_SPLIT
    # Each branch sees only the scales where it is used, so both stay finite (and so do their gradients).
    s_h = scale.clamp(max=_SIGMA_SPLIT).unsqueeze(-1)
    s_l = scale.clamp(min=_SIGMA_SPLIT).unsqueeze(-1)
    mu = loc.unsqueeze(-1)
    hermite = (log_one_minus_tanh_sq(mu + s_h * hx) * hw).sum(-1)

    m, s = loc, s_l.squeeze(-1)
    z = m / s
    expected_abs = s * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * z * z) + m * torch.erf(z / math.sqrt(2.0))
    inv_norm = 1.0 / (s_l * math.sqrt(2.0 * math.pi))
    density_sum = inv_norm * (torch.exp(-0.5 * ((lt - mu) / s_l) ** 2) + torch.exp(-0.5 * ((lt + mu) / s_l) ** 2))
    expected_s = (density_sum * lw).sum(-1)
    laguerre = 2.0 * _LOG2 - 2.0 * expected_abs - 2.0 * expected_s
    return torch.where(small, hermite, laguerre)


def _check_positive_scale(scale: torch.Tensor | float, name: str) -> None:
    """Raise ValueError naming the offending value if any scale is not > 0 (host sync on tensors: call it only when
    validating)."""
    if isinstance(scale, torch.Tensor):
        bad = ~(scale > 0)  # also catches NaN
        if bool(bad.any()):
            raise ValueError(f"{name}: scale must be > 0 everywhere, got {scale[bad].flatten()[0].item()!r} "
                             f"(min over the tensor {scale.min().item()!r})")
    elif not scale > 0:
        raise ValueError(f"{name}: scale must be > 0, got {scale!r}")


class TanhNormal(Distribution):
    """``a = tanh(u)``, ``u ~ N(loc, scale^2)`` independently per action dimension: a distribution over ``(-1, 1)^A``.

    Args:
        loc: ``(..., A)`` mean of the pre-tanh Gaussian.
        scale: ``(..., A)`` std of the pre-tanh Gaussian (> 0).
        validate_args: check ``scale > 0`` (raises ValueError naming the value). This reads the tensor on the host,
            so the agents pass ``False`` inside their update (their scales are positive by construction).

    Shapes: ``batch_shape = loc.shape[:-1]``, ``event_shape = (A,)``; ``log_prob`` and ``entropy`` return
    ``batch_shape``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.interval(-1.0, 1.0), 1)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        loc, scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        if loc.dim() < 1:
            raise ValueError(f"TanhNormal: loc and scale need an action dimension, got shape {tuple(loc.shape)}")
        if validate_args is None or validate_args:
            _check_positive_scale(scale, "TanhNormal")
        self.loc, self.scale = loc, scale
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        """``tanh(loc)``, the deterministic (evaluation) action. Note: not ``E[a]``, which shrinks towards 0."""
        return torch.tanh(self.loc)

    @property
    def mode(self) -> torch.Tensor:
        """``tanh(loc)`` (the same deterministic action as ``mean``)."""
        return torch.tanh(self.loc)

    @property
    def stddev(self) -> torch.Tensor:
        """The pre-tanh std ``scale`` (``(..., A)``)."""
        return self.scale

    def rsample_with_pre_tanh(self, sample_shape: torch.Size = torch.Size(),
                              eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: returns ``(action, pre_tanh)``, both ``sample_shape + (..., A)``. ``eps``: the
        standard-normal noise to use (that shape), drawn here if omitted."""
        shape = self._extended_shape(sample_shape)
        if eps is None:
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        u = self.loc + self.scale * eps
        return torch.tanh(u), u

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.rsample_with_pre_tanh(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, action: torch.Tensor, pre_tanh: torch.Tensor | None = None) -> torch.Tensor:
        """``log pi(action)`` summed over the action dimension: shape ``(...)``.

        Pass ``pre_tanh`` (the ``u`` with ``action = tanh(u)``, from ``rsample_with_pre_tanh``) whenever you have it:
        the result is then exact for any ``u`` (e.g. |u| = 20, where ``tanh(u)`` rounds to 1). Without it, ``u`` is
        recovered as ``atanh`` of the action clamped to ``[-1 + eps, 1 - eps]`` (``eps`` = the dtype's machine
        epsilon), so an action with |a| = 1 gives a finite (very negative) value instead of ``nan``/``-inf``.
        """
        if pre_tanh is None:
            eps = torch.finfo(action.dtype).eps
            pre_tanh = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        z = (pre_tanh - self.loc) / self.scale
        gaussian = -0.5 * z * z - torch.log(self.scale) - _HALF_LOG_2PI
        return (gaussian - log_one_minus_tanh_sq(pre_tanh)).sum(-1)

    def gaussian_entropy(self) -> torch.Tensor:
        """Entropy of the pre-tanh Gaussian, summed over the action dimension: shape ``(...)``."""
        return (0.5 + _HALF_LOG_2PI + torch.log(self.scale)).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Differential entropy of the squashed distribution, shape ``(...)``:
        ``H[N(loc, scale^2)] + sum_i E[log(1 - tanh^2 u_i)]`` (<= the Gaussian entropy), by deterministic quadrature.
        """
        return self.gaussian_entropy() + expected_tanh_log_det_jacobian(self.loc, self.scale).sum(-1)


class ClippedNormal(Distribution):
    """DrQ-v2's policy: ``x = clip(loc + scale * eps, low, high)``, ``eps ~ N(0, 1)``, per action dimension.

    ``sample(clip=c)`` first clips the *noise* ``scale * eps`` to ``[-c, c]`` (DrQ-v2 uses ``c = stddev_clip`` for the
    target and actor-loss actions) and then the action to ``[low, high]``; the action clip is straight-through (the
    gradient w.r.t. ``loc`` is 1 even when clipped), as in DrQ-v2. ``scale`` is usually the scheduled std (a float).

    What ``log_prob`` and ``entropy`` are. The executed action (``clip=None``) is a *mixed* random variable: a density
    ``N(x | loc, scale)`` on ``(low, high)`` plus point masses ``P_low = Phi((low - loc) / scale)`` at ``low`` and
    ``P_high = Phi((loc - high) / scale)`` at ``high``. Both quantities below are taken w.r.t. the reference measure
    "Lebesgue on (low, high) + a unit atom at each bound", under which this variable has an honest density:
      * ``log_prob(x)`` = ``log N(x | loc, scale)`` for ``low < x < high``, ``log P_low`` at ``x <= low`` and
        ``log P_high`` at ``x >= high``, summed over the action dimension. It is the log-likelihood of an executed
        action; it ignores the noise clip of ``sample(clip=c)`` (those samples have further atoms at ``loc +- c``).
      * ``entropy()`` = ``-E[log_prob(x)]`` in closed form per dimension, with ``alpha, beta = (low, high) - loc``
        over ``scale``: ``(Phi(beta) - Phi(alpha)) (log(scale sqrt(2 pi)) + 1/2) - (beta phi(beta) - alpha phi(alpha))/2
        - P_low log P_low - P_high log P_high``. It equals the Gaussian entropy when the bounds are far away and
        changes as the mean approaches a bound (it depends on ``loc``, unlike DrQ-v2's ``Normal.entropy()``, which is a
        function of the std schedule only). Caveat of the mixed measure: an atom with mass P adds ``-P log P >= 0``
        while a narrow density has negative differential entropy, so with a small std a mean sitting on a bound
        *raises* this entropy; read it together with the saturation fraction.
    ``gaussian_entropy`` gives DrQ-v2's unclipped value for comparison.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), 1)

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, low: float = -1.0 + 1e-6,
                 high: float = 1.0 - 1e-6, validate_args: bool | None = None):
        if not low < high:
            raise ValueError(f"ClippedNormal: need low < high, got low={low!r}, high={high!r}")
        if validate_args is None or validate_args:
            _check_positive_scale(scale, "ClippedNormal")
        loc = torch.as_tensor(loc)
        if loc.dim() < 1:
            raise ValueError(f"ClippedNormal: loc needs an action dimension, got shape {tuple(loc.shape)}")
        if isinstance(scale, torch.Tensor):
            self.loc, self.scale = torch.broadcast_tensors(loc, scale.to(loc.dtype))
        else:  # a scheduled std (Python float): filled on the device, no host-to-device copy
            self.loc, self.scale = loc, torch.full_like(loc, float(scale))
        self.low, self.high = float(low), float(high)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        """``loc`` (the deterministic evaluation action, as in DrQ-v2; not ``E[x]`` under clipping)."""
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def stddev(self) -> torch.Tensor:
        return self.scale

    def rsample(self, sample_shape: torch.Size = torch.Size(), clip: float | None = None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
        """Sample with noise clipped to ``[-clip, clip]`` if given, then the action clipped to ``[low, high]``
        (straight-through gradient w.r.t. ``loc``). Shape ``sample_shape + (..., A)``. ``eps``: the standard-normal
        noise to use (that shape), drawn here if omitted."""
        shape = self._extended_shape(sample_shape)
        if eps is None:
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        noise = eps * self.scale
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        x = self.loc + noise
        clipped = x.clamp(self.low, self.high)
        return x - x.detach() + clipped.detach()

    def sample(self, sample_shape: torch.Size = torch.Size(), clip: float | None = None,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """Like ``rsample`` but without gradient. ``clip=None``: the executed-action distribution."""
        with torch.no_grad():
            return self.rsample(sample_shape, clip=clip, eps=eps)

    def _standardised_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.low - self.loc) / self.scale, (self.high - self.loc) / self.scale

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-prob of an executed action w.r.t. the mixed reference measure (see the class docstring); ``(...)``."""
        alpha, beta = self._standardised_bounds()
        z = (value - self.loc) / self.scale
        inside = -0.5 * z * z - torch.log(self.scale) - _HALF_LOG_2PI
        at_low = torch.special.log_ndtr(alpha)
        at_high = torch.special.log_ndtr(-beta)
        per_dim = torch.where(value <= self.low, at_low, torch.where(value >= self.high, at_high, inside))
        return per_dim.sum(-1)

    def entropy(self) -> torch.Tensor:
        """``-E[log_prob(x)]`` for the executed action, closed form (see the class docstring); shape ``(...)``."""
        alpha, beta = self._standardised_bounds()
        log_p_low = torch.special.log_ndtr(alpha)
        log_p_high = torch.special.log_ndtr(-beta)
        p_low, p_high = log_p_low.exp(), log_p_high.exp()
        p_inside = (1.0 - p_low - p_high).clamp(min=0.0)
        phi = lambda t: torch.exp(-0.5 * t * t - _HALF_LOG_2PI)  # noqa: E731
        inside = p_inside * (torch.log(self.scale) + _HALF_LOG_2PI + 0.5)
        inside = inside - 0.5 * (beta * phi(beta) - alpha * phi(alpha))
        return (inside - p_low * log_p_low - p_high * log_p_high).sum(-1)

    def gaussian_entropy(self) -> torch.Tensor:
        """DrQ-v2's reported value: the unclipped Gaussian entropy summed over A (depends on ``scale`` only)."""
        return (0.5 + _HALF_LOG_2PI + torch.log(self.scale)).sum(-1)
