"""The config schema: every key has a bad value that fails in one line before anything is built; the schema covers
exactly the keys of cfgs/; rules between keys; the typed config; old snapshots' configs; the generated docs.

References: hydra's own composition of cfgs/ (the keys that exist), the agents' constructor signatures (the keys
make_agent takes), the library's own choice tuples, and the encoder (the smallest image it accepts).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from pathlib import Path

import pytest
from conftest import with_value

from drq.config import schema
from drq.config.schema import ConfigError, show

ROOT = Path(__file__).resolve().parents[1]

# At least one bad value per key: a wrong type and an out-of-range value; for names, a near miss whose closest valid
# choice the message must name (second element: a piece the line must contain besides key, value and allowed text).
BAD: dict[str, list[tuple[object, str]]] = {
    "task_name": [("walkr_walk", "closest: walker_walk"), (3, "")],
    "frame_stack": [(0, ""), ("three", ""), (2.5, "")],
    "action_repeat": [(0, ""), (-2, ""), ("x", "")],
    "discount": [(1.5, ""), (-0.1, ""), ("high", ""), (float("nan"), "")],
    "image_size": [(14, ""), ("big", "")],
    "camera_id": [(-2, ""), (1.5, ""), ([0], "")],
    "fast_render": [("no_shadow", "closest: no_shadows"), (3, "")],
    "max_episode_frames": [(0, ""), (-200, ""), ("long", "")],
    "gym.id": [("", ""), (3, "")],
    "gym.kwargs": [("camera_name", ""), ([1], ""), ({1: 2}, "")],
    "gym.pixels": [("", ""), (None, "")],
    "num_train_frames": [(0, ""), (-100, ""), ("many", "")],
    "num_seed_frames": [(-2, ""), ("x", "")],
    "eval_every_frames": [(-100, ""), (0, ""), (1.5, ""), ("often", "")],
    "num_eval_episodes": [(0, ""), (-1, ""), ("ten", "")],
    "eval_workers": [(0, ""), (-1, ""), ("many", "")],
    "save_video": [("yes", ""), (1, "")],
    "video_size": [(255, ""), (8, ""), ("big", "")],
    "replay_buffer_size": [(0, ""), (-1, ""), ("1M", "")],
    "replay_storage": [("ssd", ""), ("memory", ""), (1, "")],
    "nstep": [(0, ""), ("3", "")],
    "batch_size": [(0, ""), (-256, ""), ("big", "")],
    "lr": [(0, ""), (-1e-4, ""), ("fast", "")],
    "feature_dim": [(0, ""), ("wide", "")],
    "hidden_dim": [(0, ""), (None, "")],
    "stddev_schedule": [("linear(1.0,0.0,100)", "it reaches std 0"), ("cosine(1,2)", ""), (-0.1, "")],
    "log_every_frames": [(0, ""), (-8, ""), ("x", "")],
    "histogram_every_frames": [(0, ""), (-8, "")],
    "wandb.mode": [("onlin", "closest: online"), (1, "")],
    "wandb.project": [("", ""), (None, "")],
    "wandb.entity": [("", ""), (5, "")],
    "wandb.group": [("", ""), (False, "")],
    "wandb.tags": [("a,b", ""), ([1], "")],
    "wandb.name": [("", ""), (7, "")],
    "save_snapshot": [("no", "")],
    "snapshot_every_frames": [(0, ""), (-1000, "")],
    "save_replay_in_snapshot": [(0, "")],
    "resume": [("", ""), (5, "")],
    "stop_signals": [(["SIGTERM", "SIGKILL"], "'SIGKILL' is not one"), (15, "")],
    "env_timeout_seconds": [(0, ""), ("long", "")],
    "env_start_timeout_seconds": [(-1, ""), (None, "")],
    "env_restart_limit": [(-1, ""), (2.5, "")],
    "env_restart_window_frames": [(0, ""), ("10k", "")],
    "seed": [(-1, ""), (2**32, ""), ("one", "")],
    "device": [("gpu", "closest: cpu"), ("cuda:x", ""), (0, "")],
    "precision": [("fp16", "closest: bf16, fp32"), (16, "")],
    "compile": [("max_autotune", "closest: max-autotune"), (3, "")],
    "cuda_graphs": [("maybe", ""), (1, "")],
    "async_env": [("true", "")],
    "num_threads": [(0, ""), ("all", "")],
    "agent.name": [("sacc", "closest: sac")],
    "agent.lr": [(0, ""), ("x", "")],
    "agent.feature_dim": [(0, "")],
    "agent.hidden_dim": [(-1, "")],
    "agent.critic_target_tau": [(0, ""), (1.5, "")],
    "agent.update_every_steps": [(0, ""), (-2, "")],
    "agent.channels_last": [("yes", "")],
    "agent.num_expl_steps": [(-1, ""), ("x", "")],
    "agent.stddev_schedule": [("linear(1,0.1)", ""), ("linear(1.0,-0.1,100)", "it reaches std -0.1")],
    "agent.stddev_clip": [(0, ""), (-0.3, "")],
    "agent.init_temperature": [(0, ""), ("hot", "")],
    "agent.log_std_bounds": [([2, -10], ""), ([1], ""), ("wide", "")],
    "agent.actor_update_every_steps": [(0, "")],
    "agent.critic_target_update_every_steps": [(0, "")],
    "agent.num_target_augs": [(0, "")],
    "agent.num_critic_augs": [(0, "")],
    "agent.target_encoder": [("yes", "")],
}
SAC_ONLY = {"agent.init_temperature", "agent.log_std_bounds", "agent.actor_update_every_steps",
            "agent.critic_target_update_every_steps", "agent.num_target_augs", "agent.num_critic_augs",
            "agent.target_encoder"}  # fmt: skip
CASES = [(key, value, extra) for key, values in BAD.items() for value, extra in values]


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)


@pytest.fixture(scope="module")
def composed() -> dict[str, dict]:
    return {agent: compose(f"agent={agent}") for agent in ("drqv2", "sac")}


def flat_keys(node: dict, prefix: str = "") -> set[str]:
    """Dotted keys of the leaves; a mapping-valued key (gym.kwargs) is a leaf."""
    out = set()
    for k, v in node.items():
        path = f"{prefix}{k}"
        leaf = not isinstance(v, dict) or schema.keys().get(path) is not None
        out |= {path} if leaf else flat_keys(v, path + ".")
    return out


# ------------------------------------------------------------------------------------------ every key, bad values
def test_every_key_has_bad_values():
    assert set(BAD) == set(schema.keys()) and all(BAD.values())


@pytest.fixture
def nothing_may_start(monkeypatch):
    """Environments, workers, renderers, wandb and the run-dir lock fail loudly if anything builds them."""
    from drq.envs import pixels as env
    from drq.envs import worker as env_worker
    from drq.envs import rendering
    from drq.run import lock as run_dir_lock
    from drq.run import sinks

    def started(*args, **kwargs):
        raise AssertionError("something was built before the config was checked")

    monkeypatch.setattr(env, "make_env", started)
    monkeypatch.setattr(env.PixelEnv, "__init__", started)
    monkeypatch.setattr(env_worker.AsyncEnv, "__init__", started)
    monkeypatch.setattr(rendering, "setup_rendering", started)
    monkeypatch.setattr(sinks.WandbSink, "__init__", started)
    monkeypatch.setattr(run_dir_lock, "acquire", started)


def test_each_bad_value_is_one_line_before_anything_is_built(composed, nothing_may_start, tmp_path):
    from drq.run import trainer

    slowest = 0.0
    for key, value, extra in CASES:
        cfg = with_value(composed["sac" if key in SAC_ONLY else "drqv2"], key, value)
        lines = schema.check(cfg)
        assert len(lines) == 1, (key, value, lines)
        line = lines[0]
        assert line.startswith(f"{key}={show(value)}: {schema.keys()[key].allowed}"), (key, value, line)
        assert extra in line and "\n" not in line and "Traceback" not in line, (key, value, line)
        run_dir = tmp_path / f"run_{key}"
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            trainer.run(cfg, run_dir, say=lambda s: None)
        slowest = max(slowest, time.perf_counter() - start)
        assert str(info.value) == line
        assert not run_dir.exists()  # nothing written
    assert slowest < 5.0, slowest  # milliseconds in practice (bench/config_check.py measures it)


def test_shown_values_read_as_typed():
    assert [show(v) for v in (None, True, -100, 1e-4, "no_msaa", "", "a b", [1, "x"])] == [
        "null", "true", "-100", "0.0001", "no_msaa", "''", "'a b'", "[1,x]"]  # fmt: skip


# ---------------------------------------------------------------------------------------------- rules between keys
@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"eval_every_frames": 1001}, "eval_every_frames=1001: a multiple of action_repeat=2, e.g. 1000 or 1002 "
                                      "(frames; the loop advances action_repeat frames per agent step"),
        ({"num_seed_frames": 3}, "num_seed_frames=3: a multiple of action_repeat=2, e.g. 2 or 4"),
        ({"num_seed_frames": 1}, "num_seed_frames=1: a multiple of action_repeat=2, e.g. 0 or 2"),
        ({"max_episode_frames": 201}, "max_episode_frames=201: a multiple of action_repeat=2, e.g. 200 or 202"),
        ({"batch_size": 512, "replay_buffer_size": 100}, "batch_size=512: at most replay_buffer_size=100 "
                                                         "(transitions;"),
        ({"eval_workers": 4, "num_eval_episodes": 2}, "eval_workers=4: 'auto' or at most num_eval_episodes=2"),
        ({"nstep": 501}, "nstep=501: at most the episode's 500 agent steps = the task's 1000 frames / action_repeat=2 "
                         "(agent steps;"),
        ({"nstep": 26, "max_episode_frames": 200, "action_repeat": 8},
         "nstep=26: at most the episode's 25 agent steps = max_episode_frames=200 / action_repeat=8"),
    ],
)
def test_rules_between_keys(composed, changes, expected):
    cfg = composed["drqv2"]
    for key, value in changes.items():
        cfg = with_value(cfg, key, value)
    lines = schema.check(cfg)
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    with pytest.raises(ConfigError):
        schema.load(cfg)


def test_rule_edges_pass(composed):
    cfg = composed["drqv2"]
    for changes in ({"batch_size": 100, "replay_buffer_size": 100}, {"eval_workers": 2, "num_eval_episodes": 2},
                    {"eval_workers": "auto", "num_eval_episodes": 1}, {"nstep": 500}, {"num_seed_frames": 0},
                    {"action_repeat": 8, "num_train_frames": 8, "num_seed_frames": 0, "eval_every_frames": 8,
                     "log_every_frames": 8, "histogram_every_frames": 8, "snapshot_every_frames": 8}):  # fmt: skip
        changed = cfg
        for key, value in changes.items():
            changed = with_value(changed, key, value)
        assert schema.check(changed) == [], changes


def test_action_repeat_3_names_every_frame_count_that_drifts(composed):
    lines = schema.check(with_value(composed["drqv2"], "action_repeat", 3))
    assert [line.split("=")[0] for line in lines] == ["num_train_frames", "num_seed_frames", "eval_every_frames",
                                                      "log_every_frames", "histogram_every_frames",
                                                      "snapshot_every_frames"]  # fmt: skip
    assert lines[2].startswith("eval_every_frames=10000: a multiple of action_repeat=3, e.g. 9999 or 10002")


def test_a_bad_key_skips_the_rules_that_read_it(composed):
    cfg = with_value(with_value(composed["drqv2"], "action_repeat", 0), "eval_every_frames", 1001)
    assert [line.split("=")[0] for line in schema.check(cfg)] == ["action_repeat"]


def test_machine_checks(composed, tmp_path):
    import torch

    cfg = with_value(composed["drqv2"], "resume", str(tmp_path / "nowhere"))
    assert schema.check(cfg) == []  # a snapshot's saved config is read without asking the machine
    (line,) = schema.check(cfg, machine=True)
    assert line.startswith(f"resume={tmp_path / 'nowhere'}: auto, never, or a snapshot.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "snapshot.pt").write_bytes(b"")
    assert schema.check(with_value(cfg, "resume", str(tmp_path / "run")), machine=True) == []
    if not torch.cuda.is_available():
        (line,) = schema.check(with_value(composed["drqv2"], "device", "cuda"), machine=True)
        assert line == ("device=cuda: auto, cpu, cuda or cuda:N; no CUDA device is available (auto: cuda if "
                        "available, else cpu)")
        (line,) = schema.check(with_value(composed["drqv2"], "cuda_graphs", True), machine=True)
        assert line.startswith("cuda_graphs=true: false on this machine, which has no CUDA device")
        assert schema.check(with_value(composed["drqv2"], "cuda_graphs", True)) == []


def test_missing_and_unknown_keys(composed):
    cfg = copy.deepcopy(composed["drqv2"])
    del cfg["nstep"]
    cfg["agent"]["stddev_clp"] = 0.2
    cfg["wandb"]["modee"] = "offline"
    lines = schema.check(cfg)
    assert lines[0].startswith("nstep: missing (an integer >= 1")
    assert any(line.startswith("agent.stddev_clp=0.2: not a key of agent=drqv2; closest: agent.stddev_clip")
               for line in lines)
    assert any(line.startswith("wandb.modee=offline: not a key of wandb; closest: wandb.mode") for line in lines)


# ----------------------------------------------------------------------------------- the schema covers cfgs/ exactly
@pytest.mark.parametrize("agent", ["drqv2", "sac"])
def test_schema_covers_exactly_the_composed_keys(composed, agent):
    assert flat_keys(composed[agent]) == set(schema.keys(agent))
    assert schema.check(composed[agent]) == []


def test_every_cfgs_file_sets_only_schema_keys():
    from omegaconf import OmegaConf

    known = set(schema.keys())
    files = [ROOT / "cfgs" / "config.yaml", *sorted((ROOT / "cfgs").glob("[!h]*/**/*.yaml"))]
    assert len(files) > 24 + 4 + 2
    for path in files:
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        keys = flat_keys({k: v for k, v in node.items() if k not in ("defaults", "hydra")})
        assert keys <= known, (path, keys - known)


@pytest.mark.parametrize("preset", ["easy", "medium", "hard", "debug"])
@pytest.mark.parametrize("agent", ["drqv2", "sac"])
def test_every_preset_passes_the_schema(agent, preset):
    task = {"easy": "cartpole_swingup", "medium": "cheetah_run", "hard": "humanoid_run", "debug": "walker_walk"}
    cfg = compose(f"agent={agent}", f"task={task[preset]}", f"preset={preset}")
    assert schema.check(cfg) == []


def test_agent_keys_are_the_constructor_keywords():
    from drq.agents import AGENTS, agent_config_keys

    assert tuple(schema.AGENT_CONFIGS) == schema.AGENT_NAMES and set(schema.AGENT_NAMES) == set(AGENTS)
    for name, cls in schema.AGENT_CONFIGS.items():
        fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
        assert fields == set(agent_config_keys(name)), name


def test_image_size_bound_is_the_encoders():
    """The schema's lower bound is the smallest frame the conv stack maps to a non-empty feature map."""
    from drq.agents.networks import Encoder, conv_output_hw

    low = 15
    assert schema.keys()["image_size"].allowed == f"an integer >= {low}"
    assert min(conv_output_hw(low, low)) >= 1 and min(conv_output_hw(low - 1, low - 1)) < 1
    assert Encoder((9, low, low)).repr_dim == 32 * 1 * 1


def test_units_follow_the_names():
    """`*_frames` counts frames, `*_steps` counts agent steps; every count names its unit."""
    for name, key in schema.keys().items():
        leaf = name.rsplit(".", 1)[-1]
        assert leaf.endswith("_frames") == (key.unit == schema.FRAMES), name
        if leaf.endswith("_steps"):
            assert key.unit == schema.STEPS, name
        if key.unit == schema.STEPS:
            assert leaf.endswith("_steps") or leaf == "nstep", name
        if key.kind.startswith("int") and leaf not in ("seed", "camera_id"):
            assert key.unit, name
    assert "agent steps" in schema.keys()["agent.stddev_schedule"].unit


# --------------------------------------------------------------------------------------------------- typed config
def test_typed_config(composed):
    cfg = schema.load(with_value(composed["sac"], "num_train_frames", 1e6))
    assert isinstance(cfg.agent, schema.SACAgentConfig) and cfg.num_train_frames == 1_000_000
    assert isinstance(cfg.num_train_frames, int) and isinstance(cfg.lr, float) and cfg.wandb.tags == ()
    assert cfg.agent.log_std_bounds == (-10.0, 2.0) and cfg.agent.kwargs()["log_std_bounds"] == [-10.0, 2.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 1  # type: ignore[misc]
    assert schema.load(cfg.to_dict()) == cfg
    drqv2 = schema.load(composed["drqv2"])
    assert isinstance(drqv2.agent, schema.DrQV2AgentConfig) and drqv2.agent.stddev_schedule == "linear(1.0,0.1,100000)"


def test_aliases_are_normalised_and_extra_keys_kept(composed):
    cfg = composed["drqv2"]
    for key, value, normal in (("compile", True, "default"), ("compile", False, "none"), ("resume", True, "auto"),
                               ("resume", False, "never"), ("fast_render", True, "no_msaa"),
                               ("stop_signals", ["TERM", 10], ("SIGTERM", "SIGUSR1"))):  # fmt: skip
        assert getattr(schema.load(with_value(cfg, key, value)), key) == normal, key
    typed = schema.load({**cfg, "my_note": "hello"})
    assert typed.extra == {"my_note": "hello"} and typed.to_dict()["my_note"] == "hello"


def test_trainer_and_evaluate_read_typed_values_only():
    for path in ("drq/run/trainer.py", "drq/evaluate.py", "drq/config/protocol.py"):
        source = (ROOT / path).read_text()
        assert not re.search(r"\b(c|cfg|w)\.get\(|\b(c|cfg|w)\[\"", source), path


def test_saved_configs_fill_missing_keys_by_the_schemas_rule(composed):
    saved = copy.deepcopy(composed["sac"])
    saved["lr"] = 3e-4
    saved["agent"]["lr"] = 3e-4
    for key in ("target_encoder", "feature_dim"):
        del saved["agent"][key]
    for key in ("eval_workers", "stop_signals", "max_episode_frames"):
        del saved[key]
    saved["precision_resolved"] = "fp32"
    cfg = schema.from_saved(saved)
    assert cfg.agent.target_encoder is False  # legacy: SAC had no target encoder before the key existed
    assert cfg.agent.feature_dim == saved["feature_dim"]  # ${feature_dim} of the saved run
    assert (cfg.eval_workers, cfg.max_episode_frames, cfg.stop_signals) == (
        "auto", None, ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"))  # fmt: skip
    assert cfg.agent.lr == 3e-4 and cfg.extra == {"precision_resolved": "fp32"}
    assert schema.from_saved(schema.load(composed["sac"]).to_dict()) == schema.load(composed["sac"])


# ------------------------------------------------------------------------------------------------------ the docs
def test_docs_configuration_md_is_generated_from_the_schema():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == schema.markdown(), "run: python -m drq.config.schema --markdown > docs/configuration.md"
    for name in schema.keys():
        assert f"| `{name}`" in text, name
