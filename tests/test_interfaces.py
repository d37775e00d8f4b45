"""drq.interfaces: both agents satisfy ``Agent``, the in-process env and ``AsyncEnv`` satisfy ``Env``: every member
present (``isinstance`` of the runtime-checkable Protocol) and every method's parameters the Protocol's (names, kinds,
and defaults where the Protocol has one; extra parameters only with a default). The check is shown to fail on
objects that miss a member or change a signature."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

from drq.agents import AGENTS, make_agent
from drq.interfaces import Agent, Env

KWARGS = dict(task="cartpole_balance", frame_stack=3, action_repeat=2, seed=1, size=16)


def protocol_methods(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]


def signature_mismatches(obj: Any, proto: type) -> list[str]:
    """One line per member of ``proto`` that ``obj`` lacks, or per method whose parameters differ from the
    Protocol's."""
    problems = [f"missing attribute {n!r}" for n in getattr(proto, "__annotations__", {}) if not hasattr(obj, n)]
    for name in protocol_methods(proto):
        method = getattr(obj, name, None)
        if not callable(method):
            problems.append(f"missing method {name!r}")
            continue
        want = list(inspect.signature(getattr(proto, name)).parameters.values())[1:]  # without self
        have = list(inspect.signature(method).parameters.values())  # bound: without self
        for i, p in enumerate(want):
            q = have[i] if i < len(have) else None
            if q is None or q.name != p.name or q.kind != p.kind:
                problems.append(f"{name}: parameter {i + 1} is {q.name if q else 'missing'!s}, expected {p.name!r}")
            elif p.default is not inspect.Parameter.empty and q.default != p.default:
                problems.append(f"{name}: {p.name} defaults to {q.default!r}, expected {p.default!r}")
        for q in have[len(want):]:
            if q.default is inspect.Parameter.empty and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD):
                problems.append(f"{name}: extra parameter {q.name!r} without a default")
    return problems


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_both_agents_are_agents(name):
    agent = make_agent(name, (9, 16, 16), (2,), hidden_dim=8, feature_dim=4)
    assert isinstance(agent, Agent)
    assert signature_mismatches(agent, Agent) == []


def test_both_env_kinds_are_envs():
    from drq.envs.pixels import make_env
    from drq.envs.worker import AsyncEnv

    with make_env(**KWARGS) as env, AsyncEnv(**KWARGS) as worker:
        for e in (env, worker):
            assert isinstance(e, Env), type(e).__name__
            assert signature_mismatches(e, Env) == [], type(e).__name__
            assert e.observation_shape == (9, 16, 16) and e.action_shape == (1,)
            assert e.action_low.tolist() == [-1.0] and e.action_high.tolist() == [1.0]  # cartpole's bounds


def test_the_check_fails_on_a_missing_member_or_a_changed_signature():
    class NoWait:
        observation_shape, action_shape = (9, 16, 16), (1,)
        action_low, action_high = np.array([-1.0]), np.array([1.0])

        def reset(self, seed=None): ...
        def step(self, action): ...
        def step_async(self, action): ...
        def render(self, size=256): ...
        def close(self): ...

    assert not isinstance(NoWait(), Env)
    assert signature_mismatches(NoWait(), Env) == ["missing method 'step_wait'"]

    class OldAgent:  # act without eval_mode, update with a new required parameter
        name, update_every_steps, histograms = "old", 1, {}

        def act(self, obs: np.ndarray, step: int) -> np.ndarray: ...
        def update(self, batch, step, lr): ...
        def state_dict(self): ...
        def load_state_dict(self, state): ...

    assert isinstance(OldAgent(), Agent)  # isinstance sees the names only ...
    assert signature_mismatches(OldAgent(), Agent) == [  # ... the signature check sees the rest
        "act: parameter 3 is missing, expected 'eval_mode'", "update: extra parameter 'lr' without a default"]

    class SmallRender(NoWait):
        def step_wait(self): ...
        def render(self, size=84): ...

    assert signature_mismatches(SmallRender(), Env) == ["render: size defaults to 84, expected 256"]


def test_the_gymnasium_env_is_an_env():
    from drq.envs.gym_pixels import GymPixelEnv

    with GymPixelEnv("examples.point_reach:PointReach", size=16) as env:
        assert isinstance(env, Env) and signature_mismatches(env, Env) == []
        assert env.observation_shape == (9, 16, 16) and env.action_shape == (2,)
        low = float(np.float32(-0.1))  # the float32 Box's bound, as float64
        assert env.action_low.tolist() == [low, low] == (-env.action_high).tolist()
