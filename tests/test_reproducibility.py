"""Same seed, same numbers: evaluation episodes that do not depend on the number of eval workers, training that does
not depend on them either, and a run that repeats bit for bit on one machine (CPU).

References: dm_control itself (an env built with seed s starts where ``reset(seed=s)`` starts), and runs of the
trainer compared with each other: with 1, 2 and 3 evaluation environments, and the same command twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_state

ROOT = Path(__file__).resolve().parents[1]
# 80-frame episodes (10 agent steps); evaluations at frames 0, 160 and 320; updates from frame 160 on
BASE = ["preset=debug", "task=cartpole_balance", "wandb.mode=disabled", "save_video=false", "async_env=false",
        "max_episode_frames=80", "num_train_frames=320", "num_seed_frames=160", "eval_every_frames=160",
        "num_eval_episodes=3"]  # fmt: skip
WALL_CLOCK = ("total_time", "fps")


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=[*BASE, *overrides]), resolve=True)


def jsonl(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows without their wall-clock fields."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in lines]


def test_reset_with_a_seed_starts_where_a_fresh_env_with_that_seed_starts():
    from dm_control import suite

    from drq.env import make_env

    env = make_env("cartpole_balance", frame_stack=1, action_repeat=8, seed=1, size=16)
    try:
        env.reset()
        env.step(np.ones(env.action_shape, np.float32))  # the env has drawn from its stream before
        for seed in (7, 12345):
            env.reset(seed=seed)
            fresh = suite.load("cartpole", "balance", task_kwargs={"random": seed})
            fresh.reset()
            assert np.array_equal(env.physics.data.qpos, fresh.physics.data.qpos)
            assert np.array_equal(env.physics.data.qvel, fresh.physics.data.qvel)
            fresh.close()
        first = env.physics.data.qpos.copy()
        env.reset()  # no seed: the stream goes on from the last re-seed, another state
        assert not np.array_equal(env.physics.data.qpos, first)
    finally:
        env.close()


@pytest.fixture(scope="module")
def runs_by_eval_workers(tmp_path_factory) -> dict[int, tuple[Path, dict]]:
    """One short run (:data:`BASE`) per eval_workers in 1, 2, 3;
    1 is an in-process env, 2 and 3 are AsyncEnv worker processes. -> {workers: (run dir, agent state)}."""
    from drq.trainer import run

    out = {}
    for workers in (1, 2, 3):
        run_dir = tmp_path_factory.mktemp(f"eval_workers_{workers}")
        trainer = run(compose(f"eval_workers={workers}"), run_dir, say=lambda s: None)
        out[workers] = (run_dir, trainer.agent.state_dict())
    return out


@pytest.mark.slow
def test_eval_workers_change_neither_the_evaluation_nor_training(runs_by_eval_workers):
    (one, one_state), *others = (runs_by_eval_workers[k] for k in (1, 2, 3))
    reference = jsonl(one)
    evals = [r for r in reference if r["section"] == "eval"]
    assert [r["frame"] for r in evals] == [0, 160, 320]
    # the three episodes of an evaluation start from different states, so a run that gave two of them the same start
    # (a worker that ignored its episode's seed) would show in the std
    assert all(r["episode_reward_std"] > 0 for r in evals)
    assert any(r["section"] == "health" for r in reference)  # updates ran after the evaluation at 160
    for run_dir, state in others:
        assert jsonl(run_dir) == reference, run_dir.name  # eval rows (mean, std), train and health rows
        assert (run_dir / "eval.csv").read_text().split("\n")[1].split(",")[:4] == \
            (one / "eval.csv").read_text().split("\n")[1].split(",")[:4]  # fmt: skip
        assert assert_same_state(one_state, state, "agent") > 10


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_rows_and_parameters(runs_by_eval_workers, tmp_path):
    """Determinism on one machine (CPU): every metrics.jsonl row (wall-clock fields aside) and every parameter and
    optimiser state of a second run of the same config equal the first run's bit for bit."""
    from drq.trainer import run

    first_dir, first_state = runs_by_eval_workers[1]
    again = run(compose("eval_workers=1"), tmp_path, say=lambda s: None)
    rows = jsonl(tmp_path)
    assert {r["section"] for r in rows} == {"train", "eval", "health"}
    assert rows == jsonl(first_dir)
    assert assert_same_state(first_state, again.agent.state_dict(), "agent") > 10
    first_replay = torch.load(first_dir / "snapshot.pt", weights_only=True)["replay"]
    assert assert_same_state(first_replay, again.replay.state_dict(), "replay") > 3
