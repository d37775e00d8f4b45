"""The schema rejects every value the agents and networks used to reject themselves, so that they take typed,
already-checked values and keep only the shape checks on tensors.

Reference: the value checks of ``drq/agents/{drqv2,sac,core,networks,__init__}.py`` at 49e5dd4 (check_positive,
check_tau, num_expl_steps, the schedule's min std, log_std_bounds, target_encoder, make_agent's compile mode,
cuda_graphs, precision and unknown keys, the Encoder's smallest frame), read off the code and typed in here: one bad
value per way each check fails, and the edges they accept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import with_value

from drq.config import schema

ROOT = Path(__file__).resolve().parents[1]
POSITIVE_INT = [0, -1, 2.5, True, "x", None]  # check_positive(integer=True): > 0, whole, not a bool
POSITIVE = [0, -1e-4, True, "x", float("nan"), None]  # check_positive: > 0, a number, not a bool
BAD = {
    "agent.lr": POSITIVE, "agent.stddev_clip": POSITIVE, "agent.init_temperature": POSITIVE,
    "agent.feature_dim": POSITIVE_INT, "agent.hidden_dim": POSITIVE_INT,
    "agent.actor_update_every_steps": POSITIVE_INT, "agent.critic_target_update_every_steps": POSITIVE_INT,
    "agent.num_target_augs": POSITIVE_INT, "agent.num_critic_augs": POSITIVE_INT,
    "agent.update_every_steps": POSITIVE_INT,
    "agent.critic_target_tau": [0, -0.1, 1.5, "x", None],  # check_tau: in (0, 1]
    "agent.num_expl_steps": [-1, 1.5, True, "x"],  # a non-negative int
    "agent.stddev_schedule": ["linear(1,0.1)", "linear(1.0,-0.1,100)", "linear(1.0,0.0,100)", -0.1, 0, "cos(1)"],
    "agent.log_std_bounds": [[2, -10], [1, 1], [1], "wide", ["a", 2], [1, 2, 3]],  # [low, high], low < high
    "agent.target_encoder": ["yes", 1, None],  # true or false
    "agent.channels_last": ["yes", 1],
    "agent.name": ["ppo", 1],  # make_agent: a registered agent
    "compile": ["fast", 3],  # make_agent: check_compile_mode
    "cuda_graphs": ["maybe", 1],  # make_agent: true or false
    "precision": ["fp16", "bf32"],  # resolve_precision
    "image_size": [14, 0],  # Encoder: frames of at least 15 x 15
}  # fmt: skip
SAC_ONLY = {"agent.init_temperature", "agent.log_std_bounds", "agent.actor_update_every_steps",
            "agent.critic_target_update_every_steps", "agent.num_target_augs", "agent.num_critic_augs",
            "agent.target_encoder"}  # fmt: skip


@pytest.fixture(scope="module")
def composed() -> dict[str, dict]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        return {a: OmegaConf.to_container(compose("config", overrides=[f"agent={a}"]), resolve=True)
                for a in ("drqv2", "sac")}  # fmt: skip


@pytest.mark.parametrize("key", sorted(BAD))
def test_the_schema_rejects_what_the_agents_rejected(composed, key):
    agents = ["sac"] if key in SAC_ONLY else ["drqv2"] if key in ("agent.num_expl_steps", "agent.stddev_schedule",
                                                                  "agent.stddev_clip") else ["drqv2", "sac"]
    for agent in agents:
        for value in BAD[key]:
            lines = schema.check(with_value(composed[agent], key, value))
            assert len(lines) == 1 and lines[0].startswith(f"{key}={schema.show(value)}: "), (agent, value, lines)


def test_an_unknown_agent_key_is_refused_as_make_agent_did(composed):
    (line,) = schema.check(with_value(composed["sac"], "agent.stddev_clip", 0.3))  # a drqv2 key given to sac
    assert line.startswith("agent.stddev_clip=0.3: not a key of agent=sac")


def test_the_edges_the_agents_accept_pass(composed):
    for agent, key, value in [("drqv2", "agent.critic_target_tau", 1), ("drqv2", "agent.num_expl_steps", 0),
                              ("drqv2", "agent.stddev_schedule", 0.2), ("drqv2", "agent.feature_dim", 2.0),
                              ("sac", "agent.log_std_bounds", [-5, 2.5]), ("sac", "agent.init_temperature", 1e-6),
                              ("sac", "agent.target_encoder", False), ("drqv2", "image_size", 15)]:  # fmt: skip
        assert schema.check(with_value(composed[agent], key, value)) == [], (agent, key, value)
    typed = schema.load(with_value(composed["drqv2"], "agent.feature_dim", 2.0)).agent
    assert type(typed.feature_dim) is int and type(typed.lr) is float  # the agents get typed values
