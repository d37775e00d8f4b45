"""DrQ-v2 and SAC agents: metrics, log-prob shapes, gradient isolation, target math, soft update, errors, state."""

import io
import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from drq.agents import AGENTS, make_agent
from drq.agents.distributions import TanhNormal
from drq.agents.schedules import parse_schedule

OBS_SHAPE, A = (9, 84, 84), 3
SMALL = dict(hidden_dim=64, feature_dim=16)
METRICS = {"actor_logprob", "actor_entropy", "actor_loss", "critic_loss", "critic_q1", "critic_q2", "critic_target_q",
           "batch_reward", "actor_std", "actor_saturation", "actor_log_det_jacobian", "encoder_grad_norm",
           "actor_grad_norm", "critic_grad_norm"}
SAC_METRICS = METRICS | {"alpha", "alpha_loss", "target_entropy"}
ACTOR_METRICS = {"actor_loss", "actor_logprob", "actor_entropy", "actor_std", "actor_saturation",
                 "actor_log_det_jacobian", "actor_grad_norm", "alpha_loss"}  # SAC: on actor steps only


class Batch(NamedTuple):  # the replay.Batch contract (docs/architecture.md)
    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor


def random_batch(b=6, seed=0, constant_frames=False):
    g = torch.Generator().manual_seed(seed)
    if constant_frames:  # one grey level per sample and channel: every random shift leaves it unchanged
        obs = torch.randint(0, 256, (b, 9, 1, 1), generator=g, dtype=torch.uint8).expand(b, *OBS_SHAPE).contiguous()
        next_obs = torch.randint(0, 256, (b, 9, 1, 1), generator=g, dtype=torch.uint8)
        next_obs = next_obs.expand(b, *OBS_SHAPE).contiguous()
    else:
        obs = torch.randint(0, 256, (b, *OBS_SHAPE), generator=g, dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (b, *OBS_SHAPE), generator=g, dtype=torch.uint8)
    action = torch.rand(b, A, generator=g) * 2 - 1
    reward = torch.rand(b, 1, generator=g) * 3
    discount = torch.tensor([0.99 ** 3, 0.0, 0.99 ** 3, 0.5, 0.99 ** 3, 1.0][:b]).view(b, 1)
    return Batch(obs, action, reward, discount, next_obs)


@pytest.mark.parametrize("name,precision", [("drqv2", "fp32"), ("sac", "fp32"), ("drqv2", "bf16"), ("sac", "bf16")])
def test_one_update_returns_finite_metrics_on_device(name, precision):
    torch.manual_seed(0)
    cfg = {} if precision == "fp32" else SMALL  # the published widths once per agent
    agent = make_agent(name, OBS_SHAPE, (A,), "cpu", precision, **cfg)
    metrics = agent.update(random_batch(), step=2)
    assert set(metrics) == (SAC_METRICS if name == "sac" else METRICS)
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.device.type == "cpu", key
        assert not value.requires_grad and value.dtype == torch.float32, key
        assert torch.isfinite(value), key
    assert metrics["actor_log_det_jacobian"] <= 0 and 0 <= metrics["actor_saturation"] <= 1
    assert agent.histograms["actor_logprob"].shape == (6,)
    assert agent.histograms["abs_pre_tanh"].shape == (6 * A,)
    if name == "sac":
        assert metrics["target_entropy"] == -A and abs(metrics["alpha"].item() - 0.1) < 0.01


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_log_prob_per_sample_has_shape_b_by_1(name):
    torch.manual_seed(0)
    agent = make_agent(name, OBS_SHAPE, (A,), **SMALL)
    if name == "drqv2":  # the update's own log-prob of executed actions: one per sample, the metric is their mean
        metrics = agent.update(random_batch(b=5), step=2)
        log_prob = agent.histograms["actor_logprob"]
        assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()
        assert metrics["actor_logprob"] == log_prob.mean()
        return
    features = agent.encoder(random_batch(b=5).obs)
    action, pre_tanh, log_prob, dist = agent.sample_with_log_prob(features)
    assert action.shape == (5, A) and log_prob.shape == (5, 1)
    # the tanh-corrected density, checked against torch's TransformedDistribution
    ref_t = TanhTransform(cache_size=1)
    ref = TransformedDistribution(Normal(dist.loc.double(), dist.scale.double()), [ref_t])
    torch.testing.assert_close(log_prob.squeeze(-1).double(), ref.log_prob(ref_t(pre_tanh.double())).sum(-1),
                               atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("name,target_encoder", [("drqv2", None), ("sac", True), ("sac", False)])
def test_next_obs_is_encoded_without_gradient(name, target_encoder):
    torch.manual_seed(0)
    cfg = dict(SMALL, num_critic_augs=2, num_target_augs=3, target_encoder=target_encoder) if name == "sac" else SMALL
    agent = make_agent(name, OBS_SHAPE, (A,), **cfg)
    calls, target_calls = [], []
    agent.encoder.register_forward_hook(
        lambda mod, inp, out: calls.append((inp[0].shape[0], torch.is_grad_enabled(), out.requires_grad)))
    if target_encoder:
        agent.target_encoder.register_forward_hook(
            lambda mod, inp, out: target_calls.append((inp[0].shape[0], torch.is_grad_enabled(), out.requires_grad)))
    grads_seen = []
    orig_forward = agent.encoder.forward

    def spy_forward(obs):
        out = orig_forward(obs)
        if out.requires_grad:
            out.register_hook(lambda g, n=obs.shape[0]: grads_seen.append(n))
        return out

    agent.encoder.forward = spy_forward
    agent.update(random_batch(b=4), step=2)
    if name == "drqv2":
        assert calls == [(4, True, True), (4, False, False)]  # obs with gradient, then next_obs without
        assert grads_seen == [4]
    elif target_encoder:  # DrQ: K copies of next_obs through both encoders; the actor re-encodes the first copy
        assert calls == [(8, True, True), (12, False, False), (4, False, False)]
        assert target_calls == [(12, False, False)] and grads_seen == [8]
    else:
        assert calls == [(8, True, True), (12, False, False)]  # M = 2 copies of obs, K = 3 of next_obs
        assert grads_seen == [8]


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_actor_loss_leaves_encoder_and_critic_gradients_at_zero(name):
    """Inside a whole update: the actor's backward adds nothing to the encoder's and the critic's gradients (at the
    actor's step they are still what the critic loss left), and gives the actor (and SAC's log alpha) one."""
    torch.manual_seed(0)
    agent = make_agent(name, OBS_SHAPE, (A,), **SMALL)
    params = {f"{part}.{n}": p for part in ("encoder", "critic", "actor") for n, p in
              getattr(agent, part).named_parameters()}
    params.update({"log_alpha": agent.log_alpha} if name == "sac" else {})
    grads_at = {}

    def spy(opt_name, opt):
        step = opt.step

        def recorded_step(*args, **kwargs):
            grads_at[opt_name] = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
            return step(*args, **kwargs)

        opt.step = recorded_step

    for opt_name in ("critic_opt", "actor_opt"):
        spy(opt_name, getattr(agent, opt_name))
    before = [p.detach().clone() for p in agent.actor.parameters()]
    agent.update(random_batch(), step=2)  # SAC: an actor step
    critic_grads, actor_grads = grads_at["critic_opt"], grads_at["actor_opt"]
    for n in params:
        if n.startswith(("encoder.", "critic.")):
            assert critic_grads[n] is not None and actor_grads[n] is not None, n
            assert torch.equal(critic_grads[n], actor_grads[n]), n
    assert any(actor_grads[n] is not None and actor_grads[n].abs().max() > 0 for n in params if n.startswith("actor."))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor.parameters()))
    if name == "sac":
        assert actor_grads["log_alpha"] is not None and actor_grads["log_alpha"] != 0


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_target_critic_moves_by_exactly_tau_of_the_difference(name):
    torch.manual_seed(0)
    agent = make_agent(name, OBS_SHAPE, (A,), critic_target_tau=0.05, **SMALL)
    batch = random_batch()
    for step in (2, 3):  # SAC updates its target every 2 steps
        old_target = [p.detach().double().clone() for p in agent.critic_target.parameters()]
        old_online = [p.detach().double().clone() for p in agent.critic.parameters()]
        agent.update(batch, step)
        for t_old, c_old, t_new, c_new in zip(old_target, old_online, agent.critic_target.parameters(),
                                              agent.critic.parameters()):
            assert not torch.equal(c_old, c_new.double())  # the critic itself did learn
            if name == "sac" and step == 3:
                expected = t_old
            else:
                expected = t_old + 0.05 * (c_new.detach().double() - t_old)
            torch.testing.assert_close(t_new.detach().double(), expected, atol=1e-7, rtol=1e-6)


def test_drqv2_n_step_target_and_actor_loss():
    """With a ~0 std, y = r + discount * min Q'(next, tanh mu(next)) using the batch's n-step reward and discount."""
    torch.manual_seed(0)
    agent = make_agent("drqv2", OBS_SHAPE, (A,), stddev_schedule="1e-7", **SMALL)
    batch = random_batch(constant_frames=True)
    with torch.no_grad():
        next_f = agent.encoder(batch.next_obs)
        q1, q2 = agent.critic_target(next_f, agent.actor(next_f, 1e-7).mean)
        expected_target = (batch.reward + batch.discount * torch.min(q1, q2)).mean()
        features = agent.encoder(batch.obs)
        mean_action = agent.actor(features, 1e-7).mean
    metrics = agent.update(batch, step=10)
    torch.testing.assert_close(metrics["critic_target_q"], expected_target, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # actor loss: -min Q of the critic after its own step, at the pre-step actor's action
        q1, q2 = agent.critic(features, mean_action)
    torch.testing.assert_close(metrics["actor_loss"], -torch.min(q1, q2).mean(), atol=1e-4, rtol=1e-5)


def test_sac_target_and_losses_include_the_entropy_terms(monkeypatch):
    """Deterministic pre-tanh draws u = loc + c * scale (c differs per row, so the K target copies differ) make every
    SAC quantity computable from torch references."""
    torch.manual_seed(0)

    def coef(rows):
        return torch.linspace(-1.5, 1.5, rows).view(rows, 1)

    def fixed_draw(self, sample_shape=torch.Size(), eps=None):
        u = self.loc + coef(self.loc.shape[0]) * self.scale
        return torch.tanh(u), u

    monkeypatch.setattr(TanhNormal, "rsample_with_pre_tanh", fixed_draw)
    # target_encoder=False: the actor step sees the features from before the critic step, computable up front (the
    # target-encoder layout, with its re-encoding, is held against DrQ's update in tests/test_transcription.py)
    agent = make_agent("sac", OBS_SHAPE, (A,), num_target_augs=2, num_critic_augs=2, target_encoder=False, **SMALL)
    alpha = 0.1
    batch = random_batch(constant_frames=True)

    def reference_policy(features, c):
        dist = agent.actor(features)
        u = (dist.loc + c * dist.scale).double()
        t = TanhTransform(cache_size=1)
        ref = TransformedDistribution(Normal(dist.loc.double(), dist.scale.double()), [t])
        return torch.tanh(u).float(), ref.log_prob(t(u)).sum(-1, keepdim=True)

    with torch.no_grad():
        next_f = agent.encoder(batch.next_obs)
        values = []
        for c in coef(2 * 6).view(2, 6, 1):  # K = 2 copies of the 6 next observations, averaged
            next_a, next_logp = reference_policy(next_f, c)
            q1, q2 = agent.critic_target(next_f, next_a)
            values.append(torch.min(q1, q2).double() - alpha * next_logp)
        target = batch.reward + batch.discount * (values[0] + values[1]) / 2
        features = agent.encoder(batch.obs)
        a, logp = reference_policy(features, coef(6))
        cq1, cq2 = agent.critic(features, batch.action)
        critic_loss = 2 * (((cq1 - target) ** 2).mean() + ((cq2 - target) ** 2).mean())  # sum over M = 2 copies
    metrics = agent.update(batch, step=2)
    torch.testing.assert_close(metrics["critic_target_q"].double(), target.mean(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(metrics["critic_loss"].double(), critic_loss, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(metrics["actor_logprob"].double(), logp.mean(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(metrics["alpha_loss"].double(), (alpha * (-logp + A)).mean(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        q1, q2 = agent.critic(features, a)  # the critic after its step, as in the update
    expected_actor = (alpha * logp - torch.min(q1, q2).double()).mean()
    torch.testing.assert_close(metrics["actor_loss"].double(), expected_actor, atol=1e-4, rtol=1e-5)
    # alpha moved in the direction that brings the entropy (-log pi) towards -|A|
    direction = math.copysign(1.0, (-logp.mean() + A).item())
    assert (metrics["alpha"].item() - alpha) * direction < 0


@pytest.fixture
def one_thread():
    """Many tiny forward passes: one thread avoids OpenMP spin-waits when the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_drqv2_act_exploration_schedule_and_eval(one_thread):
    torch.manual_seed(0)
    agent = make_agent("drqv2", OBS_SHAPE, (A,), num_expl_steps=100, **SMALL)
    obs = np.random.default_rng(0).integers(0, 256, OBS_SHAPE, dtype=np.uint8)
    a = agent.act(obs, step=0, eval_mode=False)
    assert a.shape == (A,) and a.dtype == np.float32
    uniform = np.stack([agent.act(obs, 0, False) for _ in range(40)])  # 120 values
    assert uniform.min() < -0.8 and uniform.max() > 0.8 and abs(uniform.mean()) < 0.25
    eval_a = agent.act(obs, 10**6, True)
    np.testing.assert_array_equal(eval_a, agent.act(obs, 5, True))
    late = np.stack([agent.act(obs, 10**6, False) for _ in range(40)])  # std 0.1 after the schedule
    assert np.abs(late - eval_a).std() < 0.15 and (np.abs(late) <= 1).all()
    assert agent.stddev(0) == 1.0 and abs(agent.stddev(250_000) - 0.55) < 1e-12 and agent.stddev(10**7) == 0.1


def test_sac_act():
    torch.manual_seed(0)
    agent = make_agent("sac", OBS_SHAPE, (A,), **SMALL)
    obs = np.zeros(OBS_SHAPE, dtype=np.uint8)
    a = agent.act(obs, 0, eval_mode=False)
    assert a.shape == (A,) and a.dtype == np.float32 and (np.abs(a) < 1).all()
    np.testing.assert_array_equal(agent.act(obs, 0, True), agent.act(obs, 7, True))


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_state_dict_round_trip_through_weights_only_load(name):
    torch.manual_seed(0)
    agent = make_agent(name, OBS_SHAPE, (A,), **SMALL)
    agent.update(random_batch(), step=2)
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = make_agent(name, OBS_SHAPE, (A,), **SMALL)
    other.load_state_dict(state)
    obs = np.full(OBS_SHAPE, 100, dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(obs, 10, True), other.act(obs, 10, True))
    assert other.critic_opt.state_dict()["state"][0]["step"] == 1
    if name == "sac":
        assert torch.equal(other.log_alpha.detach(), agent.log_alpha.detach())
    with pytest.raises(ValueError, match="expected keys"):
        other.load_state_dict({"encoder": state["encoder"]})


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="'dqn'.*drqv2"):
        make_agent("dqn", OBS_SHAPE, (A,))
    with pytest.raises(TypeError, match="'lr_actor'.*stddev_schedule"):
        make_agent("drqv2", OBS_SHAPE, (A,), lr_actor=1e-3)
    with pytest.raises(TypeError, match="'stddev_clip'.*num_target_augs"):
        make_agent("sac", OBS_SHAPE, (A,), stddev_clip=0.3)
    with pytest.raises(ValueError, match="'fp16'"):
        make_agent("sac", OBS_SHAPE, (A,), precision="fp16")
    with pytest.raises(ValueError, match=r"'exp\(1,2\)'.*linear\(init,final,duration\)"):
        make_agent("drqv2", OBS_SHAPE, (A,), stddev_schedule="exp(1,2)")
    # a schedule that parses but reaches std <= 0: the config schema rejects it (the agents take checked values)
    assert any("std -0.1" in line for line in schema_errors("drqv2", stddev_schedule="linear(1.0,-0.1,100)"))
    assert any("agent.stddev_schedule=0" in line for line in schema_errors("drqv2", stddev_schedule="0"))
    agent = make_agent("drqv2", OBS_SHAPE, (A,), **SMALL)
    with pytest.raises(ValueError, match="float32"):
        agent.act(np.zeros(OBS_SHAPE, dtype=np.float32), 0, True)
    with pytest.raises(ValueError, match=r"\(3, 84, 84\)"):
        agent.act(np.zeros((3, 84, 84), dtype=np.uint8), 0, True)
    with pytest.raises(ValueError, match="list"):
        agent.act([0] * 3, 0, True)
    bad = random_batch()._replace(obs=torch.zeros(6, *OBS_SHAPE))
    with pytest.raises(ValueError, match="float32"):
        agent.update(bad, 0)
    assert set(AGENTS) == {"drqv2", "sac"}


def schema_errors(agent: str, top: dict | None = None, **agent_keys) -> list[str]:
    """``drq.config.schema.check``'s lines for the default config of ``agent`` with ``agent_keys`` (and the top-level
    keys ``top``) set: the agents take values this check has passed."""
    from drq.config import schema

    cfg = schema.defaults(agent)
    cfg["agent"].update(agent_keys)
    cfg.update(top or {})
    return schema.check(cfg)


# Values the agents and networks checked themselves before they took the schema's checked values: each bad value must
# still be rejected, now by the schema (one line naming the key).
SCHEMA_REJECTS = [
    ("drqv2", "lr", 0), ("sac", "lr", -1e-3), ("drqv2", "feature_dim", 0), ("sac", "feature_dim", 2.5),
    ("drqv2", "hidden_dim", 0), ("sac", "hidden_dim", True), ("drqv2", "critic_target_tau", 0),
    ("sac", "critic_target_tau", 1.5), ("drqv2", "num_expl_steps", -1), ("drqv2", "num_expl_steps", 1.5),
    ("drqv2", "stddev_clip", 0), ("drqv2", "stddev_schedule", "linear(1.0,0.0,100)"),
    ("sac", "init_temperature", 0), ("sac", "log_std_bounds", [2, 1]), ("sac", "log_std_bounds", [1]),
    ("sac", "log_std_bounds", "wide"), ("sac", "actor_update_every_steps", 0),
    ("sac", "critic_target_update_every_steps", 0), ("sac", "num_target_augs", 0), ("sac", "num_critic_augs", 0),
    ("sac", "target_encoder", "yes"), ("drqv2", "channels_last", "no"),
]


@pytest.mark.parametrize("agent,key,value", SCHEMA_REJECTS)
def test_the_schema_rejects_what_the_agents_no_longer_check(agent, key, value):
    lines = schema_errors(agent, **{key: value})
    assert len(lines) == 1 and lines[0].startswith(f"agent.{key}="), lines


@pytest.mark.parametrize("key,value", [("image_size", 14), ("cuda_graphs", "yes"), ("precision", "fp16")])
def test_the_schema_rejects_the_top_level_values_the_agents_no_longer_check(key, value):
    lines = schema_errors("drqv2", top={key: value})
    assert len(lines) == 1 and lines[0].startswith(f"{key}="), lines


def test_schedules_parse():
    assert parse_schedule("0.2")(123) == 0.2 and parse_schedule(0.3)(5) == 0.3
    lin = parse_schedule("linear(1.0, 0.1, 500000)")
    assert lin(0) == 1.0 and abs(lin(250_000) - 0.55) < 1e-12 and lin(500_000) == 0.1 and lin(10**9) == 0.1
    step = parse_schedule("step_linear(1.0,0.5,100,0.1,1e3)")
    assert step(0) == 1.0 and step(50) == 0.75 and step(100) == 0.5 and abs(step(600) - 0.3) < 1e-12
    assert step(10**6) == 0.1 and step.min_value == 0.1
    for bad in ("linear(1,2)", "cosine(1,0,10)", "", "linear(1,0,0)", None):
        with pytest.raises(ValueError, match="valid forms"):
            parse_schedule(bad)


def test_sac_target_encoder_is_a_soft_updated_copy_saved_with_the_agent():
    torch.manual_seed(0)
    agent = make_agent("sac", OBS_SHAPE, (A,), **SMALL)  # target_encoder=True is the default (DrQ's layout)
    assert agent.target_encoder is not None
    assert not any(p.requires_grad for p in agent.target_encoder.parameters())
    start = [p.detach().clone() for p in agent.target_encoder.parameters()]
    assert all(torch.equal(s, p) for s, p in zip(start, agent.encoder.parameters()))
    agent.update(random_batch(), step=1)  # odd step: no target update
    assert all(torch.equal(s, p) for s, p in zip(start, agent.target_encoder.parameters()))
    agent.update(random_batch(seed=1), step=2)  # after the critic step: theta' <- theta' + 0.01 (theta - theta')
    for s, online, target in zip(start, agent.encoder.parameters(), agent.target_encoder.parameters()):
        torch.testing.assert_close(target, s + 0.01 * (online.detach() - s), rtol=1e-6, atol=1e-8)
    state = agent.state_dict()
    assert "target_encoder" in state
    other = make_agent("sac", OBS_SHAPE, (A,), **SMALL)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(agent.target_encoder.parameters(),
                                                 other.target_encoder.parameters()))
    plain = make_agent("sac", OBS_SHAPE, (A,), target_encoder=False, **SMALL)
    assert plain.target_encoder is None and "target_encoder" not in plain.state_dict()
    with pytest.raises(ValueError, match="saved with a target encoder.*agent.target_encoder=true"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="saved without a target encoder.*agent.target_encoder=false"):
        other.load_state_dict(plain.state_dict())
    assert any(line.startswith("agent.target_encoder=yes: true or false")
               for line in schema_errors("sac", target_encoder="yes"))


def test_sac_critic_only_updates_report_the_critic_and_leave_the_actor_alone():
    """An update without an actor step (odd agent step) returns the critic's metrics only, takes no actor or alpha
    step, and the trainer's metric window averages each metric over the updates that computed it."""
    from drq.run.metrics import MetricWindow

    agent = make_agent("sac", OBS_SHAPE, (A,), **SMALL)
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    critic_only = agent.update(random_batch(), step=1)
    assert set(critic_only) == SAC_METRICS - ACTOR_METRICS and all(torch.isfinite(v) for v in critic_only.values())
    state = agent.state_dict()
    assert not state["actor_opt"]["state"] and not state["alpha_opt"]["state"]  # no actor step was taken
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    full = agent.update(random_batch(seed=1), step=2)
    assert set(full) == SAC_METRICS
    window = MetricWindow()
    for metrics in (critic_only, full):
        window.add(metrics)
    means, updates = window.take_means()
    assert updates == 2 and means["actor_loss"] == pytest.approx(full["actor_loss"].item())
    assert means["critic_loss"] == pytest.approx((critic_only["critic_loss"] + full["critic_loss"]).item() / 2)
    restored = MetricWindow()
    restored.load_state_dict({"sums": {"critic_loss": torch.tensor(6.0)}, "count": 3}, "cpu")  # an older snapshot
    assert restored.take_means() == ({"critic_loss": 2.0}, 3)
