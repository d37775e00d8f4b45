"""Configs: published defaults per task, agent keys that make_agent accepts, and one-line errors for bad overrides."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drq.config import schema as config_schema
from drq.envs import tasks
from drq.config.errors import ConfigError, check_overrides, exit_on_bad_overrides
from drq.config.schema import group_choices

ROOT = Path(__file__).resolve().parents[1]

# DrQ-v2's published settings (paper, appendix; cfgs of facebookresearch/drqv2), typed in here independently.
EASY = {"cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup", "cup_catch", "finger_spin", "hopper_stand",
        "pendulum_swingup", "walker_stand", "walker_walk"}  # fmt: skip
HARD = {"humanoid_stand", "humanoid_walk", "humanoid_run"}
PRESET = {
    "easy": {"num_train_frames": 1_100_000, "stddev_schedule": "linear(1.0,0.1,100000)", "lr": 1e-4, "feature_dim": 50},
    "medium": {"num_train_frames": 3_100_000, "stddev_schedule": "linear(1.0,0.1,500000)", "lr": 1e-4,
               "feature_dim": 50},
    "hard": {"num_train_frames": 30_100_000, "stddev_schedule": "linear(1.0,0.1,2000000)", "lr": 8e-5,
             "feature_dim": 100},
}  # fmt: skip


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)


def test_there_is_a_task_config_for_each_of_drqv2s_24_tasks():
    assert set(group_choices("task")) == set(tasks.DRQV2_TASKS) and len(tasks.DRQV2_TASKS) == 24


@pytest.mark.parametrize("task", sorted(tasks.DRQV2_TASKS))
def test_task_configs_carry_the_published_settings(task):
    cfg = compose(f"task={task}")
    assert cfg["task_name"] == task
    preset = "easy" if task in EASY else "hard" if task in HARD else "medium"
    for key, value in PRESET[preset].items():
        assert cfg[key] == value, (task, key)
    assert cfg["agent"]["stddev_schedule"] == PRESET[preset]["stddev_schedule"]
    assert cfg["agent"]["lr"] == PRESET[preset]["lr"] and cfg["agent"]["feature_dim"] == PRESET[preset]["feature_dim"]
    walker = task.startswith("walker_")
    assert (cfg["nstep"], cfg["batch_size"]) == ((1, 512) if walker else (3, 256))
    assert cfg["replay_buffer_size"] == (100_000 if task == "quadruped_run" else 1_000_000)
    assert (cfg["action_repeat"], cfg["frame_stack"], cfg["discount"]) == (2, 3, 0.99)
    assert (cfg["num_seed_frames"], cfg["eval_every_frames"], cfg["num_eval_episodes"]) == (4000, 10000, 10)
    assert config_schema.check(cfg) == []  # every published setting passes the schema and its rules


def test_sac_defaults_are_drqs():
    cfg = compose("agent=sac", "task=cheetah_run")
    agent = cfg["agent"]
    assert (cfg["lr"], cfg["batch_size"], cfg["nstep"]) == (1e-3, 512, 1)
    assert (agent["lr"], agent["init_temperature"], agent["num_target_augs"], agent["num_critic_augs"]) == (
        1e-3, 0.1, 2, 2)  # fmt: skip
    assert agent["log_std_bounds"] == [-10, 2] and agent["critic_target_tau"] == 0.01


@pytest.mark.parametrize("agent", ["drqv2", "sac"])
def test_agent_config_keys_are_make_agent_keywords(agent):
    from drq.agents import agent_config_keys

    keys = set(compose(f"agent={agent}")["agent"]) - {"name"}
    assert keys <= set(agent_config_keys(agent)), keys - set(agent_config_keys(agent))


def test_cli_overrides_and_debug_preset():
    cfg = compose("task=walker_run", "preset=debug", "lr=3e-4", "wandb.mode=offline", "agent=sac")
    assert (cfg["task_name"], cfg["num_train_frames"], cfg["agent"]["lr"], cfg["wandb"]["mode"]) == (
        "walker_run", 2000, 3e-4, "offline")  # fmt: skip
    assert cfg["batch_size"] == 512  # the task's own keys win over the preset (documented)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["task=cheetah_run", "agent=sac", "lr=3e-4", "batch_size=128", "wandb.mode=offline", "wandb.tags=[a,b]"],
        ["task=walker_walk,cheetah_run", "seed=1,2,3", "-m"],  # sweeps are checked value by value
        ["hydra.run.dir=/tmp/x", "+my_note=hello", "resume=never", "device=cpu", "num_threads=1"],
        ["eval_workers=1"], ["eval_workers=4", "num_eval_episodes=8"], ["eval_workers=auto"],
        ["--cfg", "job", "task=walker_run"],
        ["stddev_schedule='linear(1.0,0.1,50000)'", "agent.stddev_schedule=0.2"],
        ["compile=default", "precision=bf16"], ["precision=auto"], ["compile=true"],
        ["compile=max-autotune", "precision=fp32,bf16", "-m"],
    ],
)
def test_valid_overrides_pass(argv):
    check_overrides(argv)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["task=walker_wlak"], "task=walker_wlak: one of the 24 task configs in cfgs/task/; closest: walker_walk"),
        (["task=walker_walk,cheetah_rnu"],
         "task=cheetah_rnu: one of the 24 task configs in cfgs/task/; closest: cheetah_run"),
        (["agent=sacc"], "agent=sacc: one of drqv2, sac"),
        (["preset=eazy"], "preset=eazy: one of debug, easy, hard, medium"),
        (["batchsize=64"], "batchsize=64: unknown config key; closest: batch_size"),
        (["agent=sac", "agent.stddev_clip=0.2"], "agent.stddev_clip=0.2: not a key of agent=sac (a key of agent=drqv2"),
        (["wandb.mod=offline"], "wandb.mod=offline: unknown config key; closest: wandb.mode"),
        (["batch_size=big"], "batch_size=big: an integer >= 1"),
        (["task_name=walkr_walk"], "walker_walk"),
        (["precision=fp16"], "precision=fp16: one of auto, fp32, bf16"),
        (["compile=fast"], "compile=fast: one of none, default, max-autotune"),
        (["stddev_schedule=linear(1.0,0.1,50000)"], "quote the schedule for hydra: stddev_schedule='linear(1.0,0.1,50000)'"),
        (["cuda_graphs=maybe"], "cuda_graphs=maybe: true or false"),
        (["eval_workers=0"], "eval_workers=0: 'auto' or an integer >= 1"),
        (["eval_workers=many"], "eval_workers=many: 'auto' or an integer >= 1"),
    ],
)
def test_bad_overrides_name_the_value_and_the_closest_choices(argv, expected):
    with pytest.raises(ConfigError) as info:
        check_overrides(argv)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv, expected",
    [
        # every violation, one line each, in the schema's order
        (["batch_size=0", "discount=2", "precision=fp61"],
         ["discount=2: a number in [0, 1]", "batch_size=0: an integer >= 1",
          "precision=fp61: one of auto, fp32, bf16"]),
        # each value of a sweep is checked, every combination while there are few
        (["-m", "eval_every_frames=1000,-100", "seed=1,2"], ["eval_every_frames=-100: an integer >= 1"]),
        (["-m", "seed=range(1,3)", "batch_size=range(-1,2)"], ["batch_size=-1: an integer >= 1",
                                                               "batch_size=0: an integer >= 1"]),
        (["-m", "action_repeat=2,3", "eval_every_frames=1000,3000"],
         ["num_train_frames=1100000: a multiple of action_repeat=3", "num_seed_frames=4000: a multiple",
          "eval_every_frames=1000: a multiple", "log_every_frames=1000: a multiple",
          "histogram_every_frames=10000: a multiple", "snapshot_every_frames=50000: a multiple"]),
        (["seed=1,2"], ["seed=1,2: a sweep runs with -m"]),
        (["+agent.stddev_clp=0.1"], ["agent.stddev_clp=0.1: not a key of agent=drqv2; closest: agent.stddev_clip"]),
        (["~nstep"], ["nstep: missing"]),
        (["seed=[1"], ["seed=[1: not a valid override"]),
    ],
)
def test_every_violation_is_one_line(argv, expected):
    with pytest.raises(ConfigError) as info:
        check_overrides(argv)
    lines = str(info.value).splitlines()
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_graphs_without_a_gpu_is_one_clear_error():
    with pytest.raises(ConfigError) as info:
        check_overrides(["cuda_graphs=true"])
    assert str(info.value).startswith("cuda_graphs=true: false on this machine, which has no CUDA device")
    assert "\n" not in str(info.value)


TRAIN_PY_CASES = [
    ("task=walker_wlak", "drq: task=walker_wlak: one of the 24 task configs in cfgs/task/; closest: walker_walk"),
    ("agent=ppo", "drq: agent=ppo: one of drqv2, sac"),
    ("num_train_frame=10", "drq: num_train_frame=10: unknown config key; closest: num_train_frames"),
    ("compile=fast", "drq: compile=fast: one of none, default, max-autotune"),
    ("eval_every_frames=-100", "drq: eval_every_frames=-100: an integer >= 1, a multiple of action_repeat "
                               "(frames; evaluate at frames 0, E, 2E, ... and at the end)"),  # it used to hang
    ("discount=1.5", "drq: discount=1.5: a number in [0, 1] (per agent step; gamma per agent step)"),
    ("eval_every_frames=1001", "drq: eval_every_frames=1001: a multiple of action_repeat=2, e.g. 1000 or 1002"),
]


@pytest.mark.parametrize("override, expected", TRAIN_PY_CASES)
def test_a_bad_override_prints_one_line_and_exits_2(tmp_path, capsys, override, expected):
    """What train.py runs before hydra (its resume check included), in this process: one line on stderr, exit 2."""
    from drq.run.resume_changes import refuse_before_hydra

    with pytest.raises(SystemExit) as info:
        exit_on_bad_overrides([override, f"hydra.run.dir={tmp_path}/run"], also=[refuse_before_hydra])
    out = capsys.readouterr()
    assert info.value.code == 2 and out.out == ""
    assert out.err.strip().splitlines() == [out.err.strip()] and out.err.startswith(expected)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.slow  # one interpreter start (~1.5 s): train.py itself runs the check before hydra writes anything
def test_train_py_prints_one_line_and_exits_2(tmp_path):
    override, expected = TRAIN_PY_CASES[4]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}/run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert time.perf_counter() - start < 60  # seconds (about 2 on a quiet 2-core CPU): no evaluation ran
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(expected)
    assert "Traceback" not in result.stderr + result.stdout and result.stdout == ""
    assert not (tmp_path / "run").exists()  # nothing was started


def test_the_config_checks_run_without_torch():
    """A command line is checked, bad values and all, before torch loads (``drq.agents`` loads its factory, and torch,
    on first use): a fresh interpreter is the point, since this one imported torch long ago."""
    code = ("import sys\nfrom drq.config import errors\nerrors.check_overrides(['task=walker_walk', 'agent=sac'])\n"
            "try:\n    errors.check_overrides(['agent.stddev_schedule=-1'])\nexcept errors.ConfigError as e:\n"
            "    print(e)\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1] == "False" and "stddev_schedule=-1" in out[0], out
