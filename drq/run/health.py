"""Policy health: the detector over the agents' logged metrics, and the monitor the trainer runs at log time.

Pure functions over metric records (no files, no plotting); two users of one detector:

* ``diagnose(history, agent_name)`` -- a pure function from logged metric records to one ``Verdict`` per signal;
* ``HealthMonitor(agent_name).update(frame, metrics)`` -- runs the same detector at log time and returns a warning
  line once per episode of trouble (the trainer prints it, and sends ``wandb.alert`` when online).

The offline report that reads a run directory and draws the panels is ``python -m drq.analysis.health RUN_DIR``
(``drq/analysis/health.py``), outside the training path.

Signals (metric names as in docs/architecture.md, logged in the ``health`` section of ``metrics.jsonl``):

=============  ==========================================================  ===================
signal         metrics it reads                                            problem it reports
=============  ==========================================================  ===================
``finite``     every metric of every record                                ``non_finite``
``entropy``    SAC: ``actor_entropy`` vs ``target_entropy``, ``alpha``;     ``entropy_collapse``
               DrQ-v2: ``actor_std`` (the std is scheduled, not learned)
``log_prob``   ``actor_logprob`` per action dimension                       ``logprob_blowup``
``saturation`` ``actor_saturation``, ``actor_log_det_jacobian`` per dim     ``saturation``
``q_values``   ``critic_q1``, ``critic_q2``, ``critic_target_q``            ``q_divergence``
=============  ==========================================================  ===================

A verdict is ``healthy``, the problem name, or ``insufficient_data`` (too few logs, a metric missing, or the action
dimension unknown where a per-dimension bound needs it). Every number the detector compares against lives in
``THRESHOLDS``. Units: ``frame`` is the user's clock (agent steps x action repeat); windows count *health logs*
(records), so they do not depend on how often the trainer logs.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

AGENTS = ("drqv2", "sac")
SIGNALS = ("finite", "entropy", "log_prob", "saturation", "q_values")
PROBLEMS = ("entropy_collapse", "saturation", "logprob_blowup", "q_divergence", "non_finite")
OK_STATUSES = ("healthy", "insufficient_data")


@dataclass(frozen=True)
class HealthThresholds:
    """Every threshold of the detector, in one place. Each is a heuristic; the comment says why this value.

    "per dim" means divided by the action dimension |A|: log-prob, entropy and the log-det-Jacobian are sums over
    action dimensions, so only their per-dimension values can be compared across tasks.
    """

    # A condition must hold at this many consecutive health logs before it is a problem: a single batch of 256
    # samples is noisy, and SAC's alpha controller needs a few logs to react to a dip below the target entropy.
    sustain_logs: int = 5
    # HealthMonitor re-arms a signal (may warn again) after this many consecutive logs without a problem verdict
    # (logs where a new episode is building up but not yet sustained count as without).
    rearm_logs: int = 10

    # SAC: entropy collapse when actor_entropy sits this many nats *per dimension* below target_entropy (= -|A|).
    # 1 nat/dim means the per-dimension spread is e^-1 ~ 0.37x what the alpha controller asks for; a working
    # controller raises alpha and pulls entropy back within a few logs.
    sac_entropy_gap_per_dim: float = 1.0
    # SAC: alpha below this while entropy is below target and still falling: the entropy bonus has stopped acting
    # (log alpha must climb ~ln(10) per decade back, which at lr 1e-3 takes thousands of updates).
    sac_alpha_min: float = 1e-4
    # DrQ-v2: the std is scheduled (linear(1.0, 0.1, N) by default, so >= 0.1); a std below this means a schedule
    # string that ends near zero: no exploration noise left, and target-policy smoothing noise is gone too.
    drqv2_std_min: float = 0.01

    # Log-prob blow-up: mean log-prob per dimension above this. The log-density of a continuous action has no upper
    # bound at 0; +6 nats/dim means a per-dimension action spread of ~1e-3 (a Gaussian's log-density at a typical
    # sample is -1.42 - log(sigma)). SAC at its target entropy sits near +1 nat/dim, DrQ-v2 at the end of its
    # default schedule (sigma 0.1) near +0.9.
    logprob_per_dim_max: float = 6.0
    # ... or rising fast: up by more than this many nats/dim from its minimum over the last `rise_window_logs` logs,
    # while above `logprob_rise_floor_per_dim` (1 nat/dim above SAC's target, so the ordinary climb from a wide initial
    # policy to the target entropy, about 1.5 nats/dim, is not flagged).
    logprob_rise_per_dim: float = 3.0
    rise_window_logs: int = 10
    logprob_rise_floor_per_dim: float = 2.0

    # Saturation: fraction of action dimensions with |a| > 0.99 above this ...
    saturation_fraction_max: float = 0.9
    # ... or mean log(1 - tanh^2 u) per dimension below this: -5 is |u| ~ 3.2, |a| ~ 0.997. There the tanh passes
    # almost no gradient to the actor, and in SAC the -log(1 - a^2) term dominates the log-prob.
    log_det_jacobian_per_dim_min: float = -5.0

    # Q divergence. DMC rewards are in [0, 1] per environment step (`reward_per_env_step_max`), so an agent step
    # (action_repeat env steps) earns at most action_repeat and Q <= action_repeat / (1 - discount). Diverged: |Q|
    # above `q_bound_margin` times that (room for function-approximation overshoot and SAC's soft bonus
    # alpha * (-log pi) per step).
    reward_per_env_step_max: float = 1.0
    q_bound_margin: float = 2.0
    # Used when the caller does not say: `default_action_repeat` 8 is the largest action repeat in the DrQ / DrQ-v2
    # task settings, so the bound is loose rather than a false alarm; `default_discount` 0.99 is both papers'.
    default_action_repeat: int = 8
    default_discount: float = 0.99
    # ... or growing exponentially: |Q| multiplied by more than `q_growth_factor` over `q_growth_window_logs` logs
    # while already above `q_growth_floor_fraction` of r_max / (1 - discount) (early training legitimately grows Q
    # from ~0 by large factors).
    q_growth_factor: float = 4.0
    q_growth_window_logs: int = 10
    q_growth_floor_fraction: float = 0.5


THRESHOLDS = HealthThresholds()


@dataclass(frozen=True)
class Verdict:
    """One signal's verdict.

    status: 'healthy', 'insufficient_data' or one of PROBLEMS. frame: the frame at which the first episode of
    trouble became a problem (None when healthy). ongoing: whether the problem still holds at the last log.
    detail: one human-readable sentence with the numbers behind the verdict.
    """

    status: str
    detail: str
    frame: int | None = None
    ongoing: bool = False

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES


@dataclass(frozen=True)
class RunContext:
    """What the detector needs to know about a run besides its metrics."""

    agent: str
    action_dim: int | None
    action_repeat: int
    discount: float

    def q_theory_max(self, th: HealthThresholds) -> float:
        """Largest possible |Q| (per agent step, discounted): r_max * action_repeat / (1 - discount)."""
        return th.reward_per_env_step_max * self.action_repeat / (1.0 - self.discount)


def _check_agent(agent_name: str) -> str:
    if agent_name not in AGENTS:
        raise ValueError(f"unknown agent {agent_name!r}: valid choices are {', '.join(AGENTS)}")
    return agent_name


def make_context(agent_name: str, records: Sequence[Mapping[str, float]] = (), action_dim: int | None = None,
                 action_repeat: int | None = None, discount: float | None = None,
                 thresholds: HealthThresholds = THRESHOLDS) -> RunContext:
    """Resolve the run context. The action dimension, when not given, comes from SAC's target_entropy (= -|A|)."""
    agent = _check_agent(agent_name)
    if action_dim is not None and action_dim < 1:
        raise ValueError(f"action_dim must be >= 1, got {action_dim}")
    if action_repeat is not None and action_repeat < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    if discount is not None and not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    if action_dim is None:
        for record in records:
            target = record.get("target_entropy")
            if target is not None and math.isfinite(target) and round(-target) >= 1:
                action_dim = int(round(-target))
                break
    return RunContext(agent=agent, action_dim=action_dim,
                      action_repeat=action_repeat or thresholds.default_action_repeat,
                      discount=thresholds.default_discount if discount is None else discount)


# ----------------------------------------------------------------------------------------------- window helpers


def _sustained(cond: np.ndarray, k: int) -> np.ndarray:
    """out[i] = cond[i-k+1..i] all true (False for i < k-1)."""
    out = np.zeros_like(cond, dtype=bool)
    run = 0
    for i, c in enumerate(cond):
        run = run + 1 if c else 0
        out[i] = run >= k
    return out


def _rolling_min(x: np.ndarray, w: int) -> np.ndarray:
    """min of the finite values among x[i-w+1..i] (NaN when there are none)."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        window = x[max(0, i - w + 1): i + 1]
        window = window[np.isfinite(window)]
        if window.size:
            out[i] = window.min()
    return out


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x[i - lag] (NaN for i < lag)."""
    out = np.full(len(x), np.nan)
    if lag < len(x):
        out[lag:] = x[: len(x) - lag]
    return out


def _less(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a < b, dtype=bool)


def _greater(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a > b, dtype=bool)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ----------------------------------------------------------------------------------------------- the detector


class _Stream:
    """Metric records as aligned arrays: series(name)[i] is records[i][name], NaN where a record lacks it."""

    def __init__(self, records: Sequence[Mapping[str, float]]):
        self.records = records
        self.frames = np.array([int(r.get("frame", i)) for i, r in enumerate(records)], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def has(self, *names: str) -> bool:
        return all(sum(1 for r in self.records if r.get(n) is not None) > 0 for n in names)

    def count(self, name: str) -> int:
        return sum(1 for r in self.records if r.get(name) is not None)

    def series(self, name: str) -> np.ndarray:
        return np.array([as_float(r.get(name)) for r in self.records], dtype=np.float64)


def as_float(value: object) -> float:
    """A logged metric value as a float; a missing one (None) is NaN."""
    if value is None:
        return math.nan
    return float(value)  # type: ignore[arg-type]


def _verdict_from(bad: np.ndarray, stream: _Stream, status: str, describe: Callable[[int], str],
                  healthy_detail: str) -> Verdict:
    """First flagged point -> problem verdict (its frame and numbers); none -> healthy."""
    hits = np.flatnonzero(bad)
    if hits.size == 0:
        return Verdict("healthy", healthy_detail)
    first = int(hits[0])
    ongoing = bool(bad[-1])
    tail = "still so at the last log" if ongoing else f"recovered by frame {int(stream.frames[-1]):,}"
    return Verdict(status, f"{describe(first)} ({tail})", frame=int(stream.frames[first]), ongoing=ongoing)


def _check_finite(stream: _Stream, other_records: Sequence[Mapping[str, float]]) -> Verdict:
    first: tuple[int, str] | None = None
    names: set[str] = set()
    for record in list(stream.records) + list(other_records):
        for key, value in record.items():
            if key in ("section", "frame", "step"):
                continue
            if value is None or (isinstance(value, (int, float)) and not math.isfinite(value)):
                names.add(key)
                frame = int(record.get("frame", -1))
                if first is None or frame < first[0]:
                    first = (frame, key)
    if first is None:
        return Verdict("healthy", f"every metric finite over {len(stream)} logs")
    ongoing = any(not math.isfinite(as_float(v)) for k, v in stream.records[-1].items()
                  if k not in ("section", "frame", "step")) if len(stream) else False
    return Verdict("non_finite", f"{first[1]} is not finite at frame {first[0]:,}; non-finite metrics: "
                   f"{', '.join(sorted(names))}", frame=first[0], ongoing=ongoing)


def _check_entropy(stream: _Stream, ctx: RunContext, th: HealthThresholds) -> Verdict:
    k = th.sustain_logs
    if ctx.agent == "drqv2":
        if stream.count("actor_std") < k:
            return Verdict("insufficient_data", f"need >= {k} logs of actor_std")
        std = stream.series("actor_std")
        bad = _sustained(_less(std, th.drqv2_std_min), k)
        return _verdict_from(
            bad, stream, "entropy_collapse",
            lambda i: f"scheduled std {_fmt(std[i])} < {th.drqv2_std_min} for {k} logs: no exploration noise left",
            f"DrQ-v2's std is scheduled (last {_fmt(std[-1])}), so entropy follows the schedule, not learning")
    if stream.count("actor_entropy") < k:
        return Verdict("insufficient_data", f"need >= {k} logs of actor_entropy")
    if ctx.action_dim is None:
        return Verdict("insufficient_data", "action dimension unknown (no target_entropy logged; pass action_dim)")
    a = ctx.action_dim
    ent = stream.series("actor_entropy")
    target = stream.series("target_entropy") if stream.has("target_entropy") else np.full(len(stream), -float(a))
    alpha = stream.series("alpha") if stream.has("alpha") else np.full(len(stream), np.nan)
    gap = (ent - target) / a
    far_below = _sustained(_less(gap, -th.sac_entropy_gap_per_dim), k)
    below_tiny_alpha = _sustained(_less(alpha, th.sac_alpha_min) & _less(ent, target), k)
    falling = _less(ent, _lagged(ent, k - 1))
    bad = far_below | (below_tiny_alpha & falling)

    def describe(i: int) -> str:
        return (f"entropy {_fmt(ent[i])} vs target {_fmt(target[i])} ({_fmt(gap[i])} nats/dim) with alpha "
                f"{_fmt(alpha[i])} for {k} logs")

    return _verdict_from(bad, stream, "entropy_collapse", describe,
                         f"entropy tracks its target (last {_fmt(ent[-1])} vs {_fmt(target[-1])}, "
                         f"alpha {_fmt(alpha[-1])})")


def _check_log_prob(stream: _Stream, ctx: RunContext, th: HealthThresholds) -> Verdict:
    k = th.sustain_logs
    if stream.count("actor_logprob") < k:
        return Verdict("insufficient_data", f"need >= {k} logs of actor_logprob")
    if ctx.action_dim is None:
        return Verdict("insufficient_data", "action dimension unknown: the log-prob bound is per dimension")
    per_dim = stream.series("actor_logprob") / ctx.action_dim
    too_high = _greater(per_dim, th.logprob_per_dim_max)
    rise = per_dim - _rolling_min(per_dim, th.rise_window_logs)
    rising = _greater(rise, th.logprob_rise_per_dim) & _greater(per_dim, th.logprob_rise_floor_per_dim)
    bad = _sustained(too_high | rising, k)

    def describe(i: int) -> str:
        return (f"log-prob {_fmt(per_dim[i])} nats/dim (bound {th.logprob_per_dim_max}), up {_fmt(rise[i])} "
                f"nats/dim within {th.rise_window_logs} logs")

    return _verdict_from(bad, stream, "logprob_blowup", describe,
                         f"log-prob {_fmt(per_dim[-1])} nats/dim, within bounds")


def _check_saturation(stream: _Stream, ctx: RunContext, th: HealthThresholds) -> Verdict:
    k = th.sustain_logs
    have_frac = stream.count("actor_saturation") >= k
    have_ldj = stream.count("actor_log_det_jacobian") >= k and ctx.action_dim is not None
    if not (have_frac or have_ldj):
        return Verdict("insufficient_data", f"need >= {k} logs of actor_saturation or actor_log_det_jacobian "
                       "(the latter with a known action dimension)")
    frac = stream.series("actor_saturation") if have_frac else np.full(len(stream), np.nan)
    ldj = (stream.series("actor_log_det_jacobian") / ctx.action_dim if have_ldj  # type: ignore[operator]
           else np.full(len(stream), np.nan))
    bad = _sustained(_greater(frac, th.saturation_fraction_max) | _less(ldj, th.log_det_jacobian_per_dim_min), k)

    def describe(i: int) -> str:
        return (f"{_fmt(frac[i])} of action dims at |a| > 0.99 (bound {th.saturation_fraction_max}), "
                f"log-det-Jacobian {_fmt(ldj[i])}/dim (bound {th.log_det_jacobian_per_dim_min}) for {k} logs")

    return _verdict_from(bad, stream, "saturation", describe,
                         f"saturated fraction {_fmt(frac[-1])}, log-det-Jacobian {_fmt(ldj[-1])}/dim")


def _check_q(stream: _Stream, ctx: RunContext, th: HealthThresholds) -> Verdict:
    k = th.sustain_logs
    names = [n for n in ("critic_q1", "critic_q2", "critic_target_q") if stream.count(n) >= k]
    if not names:
        return Verdict("insufficient_data", f"need >= {k} logs of critic_q1 / critic_q2 / critic_target_q")
    with np.errstate(invalid="ignore"):
        q = np.nanmax(np.abs(np.stack([stream.series(n) for n in names])), axis=0)
    theory = ctx.q_theory_max(th)
    bound = th.q_bound_margin * theory
    w = th.q_growth_window_logs
    growth = q / _lagged(q, w - 1)
    growing = _greater(growth, th.q_growth_factor) & _greater(q, th.q_growth_floor_fraction * theory)
    bad = _sustained(_greater(q, bound) | growing, k)

    def describe(i: int) -> str:
        return (f"|Q| {_fmt(q[i])} vs bound {_fmt(bound)} (= {th.q_bound_margin} x {_fmt(theory)} = "
                f"{th.q_bound_margin} x action_repeat {ctx.action_repeat} / (1 - {ctx.discount})), "
                f"x{_fmt(growth[i])} within {w} logs")

    return _verdict_from(bad, stream, "q_divergence", describe,
                         f"|Q| {_fmt(q[-1])}, bound {_fmt(bound)}")


def diagnose(history: Sequence[Mapping[str, float]], agent_name: str, *, action_dim: int | None = None,
             action_repeat: int | None = None, discount: float | None = None,
             thresholds: HealthThresholds = THRESHOLDS) -> dict[str, Verdict]:
    """One verdict per signal (keys: SIGNALS) for a run's logged metrics.

    history: records in log order, each ``{"frame": int, <metric>: float, ...}`` -- the agent's metrics as logged
        (``metrics.jsonl``'s health lines). Records with ``"section": "eval"`` or ``"train"`` (episode statistics)
        are used only for the non-finite check.
    agent_name: 'drqv2' or 'sac' (thresholds are agent-aware: SAC's entropy is learned against a target, DrQ-v2's std
        is scheduled).
    action_dim: |A|; when None it is read from SAC's target_entropy (= -|A|). Per-dimension checks need it.
    action_repeat, discount: for the Q bound (defaults in THRESHOLDS).
    """
    other_records = [r for r in history if r.get("section") in ("eval", "train")]
    metric_records = [r for r in history if r.get("section") not in ("eval", "train")]
    ctx = make_context(agent_name, metric_records, action_dim, action_repeat, discount, thresholds)
    stream = _Stream(metric_records)
    return {
        "finite": _check_finite(stream, other_records),
        "entropy": _check_entropy(stream, ctx, thresholds),
        "log_prob": _check_log_prob(stream, ctx, thresholds),
        "saturation": _check_saturation(stream, ctx, thresholds),
        "q_values": _check_q(stream, ctx, thresholds),
    }


# ----------------------------------------------------------------------------------------------- monitor


class HealthMonitor:
    """The detector at log time: ``update`` returns new warning lines, once per episode of trouble.

    A problem that persists warns once; the signal re-arms after it has been healthy for
    ``thresholds.rearm_logs`` consecutive logs, and then a new episode of trouble warns again.
    """

    def __init__(self, agent_name: str, *, action_dim: int | None = None, action_repeat: int | None = None,
                 discount: float | None = None, thresholds: HealthThresholds = THRESHOLDS):
        self.agent_name = _check_agent(agent_name)
        self._kwargs = dict(action_dim=action_dim, action_repeat=action_repeat, discount=discount,
                            thresholds=thresholds)
        self._th = thresholds
        # The longest look-back of any rule, plus the sustain window on top of it.
        keep = max(thresholds.rise_window_logs, thresholds.q_growth_window_logs) + 2 * thresholds.sustain_logs
        self._history: deque[dict[str, float]] = deque(maxlen=keep)
        self._armed = {s: True for s in SIGNALS}
        self._healthy_streak = {s: 0 for s in SIGNALS}
        self.last_verdicts: dict[str, Verdict] = {}

    def update(self, frame: int, metrics: Mapping[str, float]) -> list[str]:
        """Add one log of the agent's metrics (taken at ``frame``); return the warning lines it raises."""
        record: dict[str, float] = {k: float(v) for k, v in metrics.items()}
        record["frame"] = int(frame)
        self._history.append(record)
        self.last_verdicts = diagnose(list(self._history), self.agent_name, **self._kwargs)  # type: ignore[arg-type]
        warnings = []
        for signal, verdict in self.last_verdicts.items():
            if verdict.ok or not verdict.ongoing:
                self._healthy_streak[signal] += 1
                if self._healthy_streak[signal] >= self._th.rearm_logs:
                    self._armed[signal] = True
                continue
            self._healthy_streak[signal] = 0
            if self._armed[signal]:
                self._armed[signal] = False
                warnings.append(f"{verdict.status} ({signal} signal): {verdict.detail}")
        return warnings


if __name__ == "__main__":  # the old command line: say where the report went instead of exiting silently
    import sys

    print("drq.run.health is the detector only; the report is: python -m drq.analysis.health RUN_DIR", file=sys.stderr)
    sys.exit(2)
