"""agent=sac runs DrQ's published protocol task by task; DrQ-v2's presets, preset=debug and overrides still win."""

from __future__ import annotations

from pathlib import Path

import pytest

from drq.config import schema as config_schema
from drq.envs import tasks
from drq.config.protocol import protocol_line

ROOT = Path(__file__).resolve().parents[1]

# DrQ (Kostrikov et al. 2020): PlaNet's action repeat per domain (paper, appendix), and from denisyarats/drq
# config.yaml: 1000 seed agent steps, an evaluation of 10 episodes every 5000 agent steps, replay 100k, lr 1e-3, and
# batch 512 "to reproduce the results in the paper". Typed in here independently of cfgs/.
DRQ_ACTION_REPEAT = {"cartpole": 8, "reacher": 4, "cheetah": 4, "cup": 4, "finger": 2, "walker": 2}


def compose(*overrides: str) -> tuple[dict, str | None]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
        source = cfg.hydra.runtime.choices.get("protocol")
        cfg = OmegaConf.to_container(cfg, resolve=False)
        cfg.pop("hydra")
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True), source


@pytest.mark.parametrize("task", sorted(tasks.DRQV2_TASKS))
def test_sac_runs_drqs_protocol_per_domain(task):
    cfg, source = compose("agent=sac", f"task={task}")
    repeat = DRQ_ACTION_REPEAT.get(task.split("_")[0], 2)  # other domains: the config's action repeat 2
    assert cfg["action_repeat"] == repeat
    assert cfg["num_seed_frames"] == 1000 * repeat and cfg["eval_every_frames"] == 5000 * repeat
    assert (cfg["replay_buffer_size"], cfg["batch_size"], cfg["nstep"], cfg["num_eval_episodes"]) == (
        100_000, 512, 1, 10)  # fmt: skip
    assert cfg["agent"]["lr"] == (8e-5 if task.startswith("humanoid") else 1e-3)  # the hard preset still applies
    assert cfg["agent"]["target_encoder"] is True
    assert source == f"sac/{task}"
    assert config_schema.check(cfg) == []  # DrQ's protocol passes the schema and its rules


def test_drqv2_keeps_its_presets_and_has_no_protocol_file():
    cfg, _ = compose("agent=drqv2", "task=cartpole_swingup")
    assert (cfg["action_repeat"], cfg["num_seed_frames"], cfg["replay_buffer_size"], cfg["batch_size"]) == (
        2, 4000, 1_000_000, 256)  # fmt: skip
    assert not (ROOT / "cfgs" / "protocol" / "drqv2").exists()


def test_debug_preset_and_overrides_win_over_the_protocol():
    cfg, _ = compose("agent=sac", "task=cartpole_swingup", "preset=debug")
    assert (cfg["num_seed_frames"], cfg["replay_buffer_size"], cfg["batch_size"], cfg["image_size"]) == (
        400, 10_000, 16, 48)  # fmt: skip
    cfg, _ = compose("agent=sac", "task=cheetah_run", "action_repeat=2", "batch_size=128", "agent.target_encoder=false")
    assert (cfg["action_repeat"], cfg["batch_size"], cfg["agent"]["target_encoder"]) == (2, 128, False)
    assert cfg["num_seed_frames"] == 4000  # the protocol's frames stay unless overridden too


def test_protocol_line_names_the_source_and_both_clocks():
    cfg, source = compose("agent=sac", "task=cartpole_swingup")
    line = protocol_line(cfg, source)
    assert "\n" not in line and "cfgs/protocol/sac/cartpole_swingup.yaml" in line
    for part in ("action_repeat=8", "replay_buffer_size=100,000", "num_seed_frames=8,000 (1,000 agent steps)",
                 "batch_size=512", "lr=0.001", "nstep=1", "eval every 40,000 frames (5,000 agent steps) x 10 episodes"):
        assert part in line, part


def test_protocol_line_names_no_protocol_file_that_does_not_exist():
    cfg, source = compose("agent=drqv2", "task=walker_walk")  # hydra still reports the optional choice drqv2/walker_walk
    line = protocol_line(cfg, source)
    assert "cfgs/protocol" not in line and line.startswith("protocol (cfgs/agent/drqv2.yaml, the preset")
