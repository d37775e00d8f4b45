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
# 80-frame episodes (10 agent steps); evaluations at frames 0 and 320, updates from frame 160 on
BASE = ["preset=debug", "task=cartpole_balance", "wandb.mode=disabled", "save_video=false", "async_env=false",
        "max_episode_frames=80", "num_train_frames=320", "num_seed_frames=160", "eval_every_frames=320",
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

    from drq.envs.pixels import make_env

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
    from drq.run.trainer import run

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
    assert [r["frame"] for r in evals] == [0, 320]
    # the three episodes of an evaluation start from different states, so a run that gave two of them the same start
    # (a worker that ignored its episode's seed) would show in the std
    assert all(r["episode_reward_std"] > 0 for r in evals)
    assert any(r["section"] == "health" for r in reference)  # updates ran between the evaluations
    for run_dir, state in others:
        assert jsonl(run_dir) == reference, run_dir.name  # eval rows (mean, std), train and health rows
        assert (run_dir / "eval.csv").read_text().split("\n")[1].split(",")[:4] == \
            (one / "eval.csv").read_text().split("\n")[1].split(",")[:4]  # fmt: skip
        assert assert_same_state(one_state, state, "agent") > 10


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_rows_and_parameters(runs_by_eval_workers, tmp_path):
    """Determinism on one machine (CPU): every metrics.jsonl row (wall-clock fields aside) and every parameter and
    optimiser state of a second run of the same config equal the first run's bit for bit."""
    from drq.run.trainer import run

    first_dir, first_state = runs_by_eval_workers[1]
    again = run(compose("eval_workers=1"), tmp_path, say=lambda s: None)
    rows = jsonl(tmp_path)
    assert {r["section"] for r in rows} == {"train", "eval", "health"}
    assert rows == jsonl(first_dir)
    assert assert_same_state(first_state, again.agent.state_dict(), "agent") > 10
    # the replay: the snapshots' manifests, which hold a CRC of every field of every stored step (replay.segments),
    # and the contents themselves
    manifests = [torch.load(d / "snapshot.pt", weights_only=True)["replay"] for d in (first_dir, tmp_path)]
    assert assert_same_state(*manifests, "replay manifest") > 3
    assert again.replay.total == manifests[0]["total"]


class RecordedRun:
    """What ``wandb.init`` returns, as far as drq.run.sinks uses it, recording the init keywords and ``log`` calls."""

    def __init__(self, **init_kwargs):
        self.init_kwargs, self.rows, self.id, self.dir = init_kwargs, [], "recorded", None

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, data):
        self.rows.append(dict(data))

    def finish(self, exit_code=0):
        pass


@pytest.mark.slow
def test_a_resume_says_what_changed_and_refuses_what_cannot_change(runs_by_eval_workers, tmp_path, monkeypatch):
    import shutil

    import wandb

    from drq.config import errors as config_errors
    from drq.run import provenance
    from drq.run import resume_changes
    from drq.run import trainer

    run_dir = tmp_path / "run"
    shutil.copytree(runs_by_eval_workers[1][0], run_dir)
    (first,) = provenance.read(run_dir)  # the first session's record, written at its start
    from drq.speed.precision import resolve_precision

    # what precision=auto resolved to on this machine: fp32 on an AVX2 CPU, bf16 where the CPU has it natively
    assert first["frame"] == 0 and first["resumed_from"] is None
    assert first["precision"] == resolve_precision("auto", "cpu")[0]
    assert set(first["versions"]) == {"python", "torch", "mujoco", "dm_control", "gymnasium", "numpy", "drq"}
    assert first["versions"]["torch"] == torch.__version__ and first["num_threads"] == 1  # the debug preset's
    assert first["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert first["gl_backend"] in ("egl", "osmesa", "glfw")

    # refused before anything is written: the pre-hydra check (train.py's exit 2) and the trainer's own
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as stop:
        config_errors.exit_on_bad_overrides([*BASE, "eval_workers=1", f"hydra.run.dir={run_dir}", "frame_stack=2"],
                                            also=[resume_changes.refuse_before_hydra])  # as train.py does
    assert stop.value.code == 2
    with pytest.raises(resume_changes.ResumeRefused, match=r"frame_stack: snapshot 3, now 2 \(the replay"):
        trainer.Trainer(compose("eval_workers=1", "frame_stack=2"), run_dir, say=lambda s: None)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before

    # accepted: one line, a resume row in metrics.jsonl, a wandb point, a second session in run.json
    recorded = []
    monkeypatch.setattr(wandb, "init", lambda **kw: recorded.append(RecordedRun(**kw)) or recorded[-1])
    said = []
    overrides = ("eval_workers=1", "batch_size=32", "num_train_frames=400", "num_eval_episodes=1", "wandb.mode=offline")
    trainer.run(compose(*overrides), run_dir, say=said.append)
    line = "resumed with other settings at frame 320: num_train_frames 320 → 400; num_eval_episodes 3 → 1; " \
           "batch_size 16 → 32; wandb.mode disabled → offline"  # fmt: skip
    assert line in said
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (resume,) = [r for r in rows if r["section"] == "resume"]
    assert resume["frame"] == 320 and resume["changes"] == {
        "num_train_frames": [320, 400], "num_eval_episodes": [3, 1], "batch_size": [16, 32],
        "wandb.mode": ["disabled", "offline"]}  # fmt: skip
    (run,) = recorded
    assert run.init_kwargs["config"]["provenance"]["frame"] == 320  # this session's record
    (point,) = [r for r in run.rows if "resume/changed_keys" in r]
    assert point["resume/changed_keys"] == 4 and point["frame"] == 320
    sessions = provenance.read(run_dir)
    assert [s["frame"] for s in sessions] == [0, 320] and sessions[1]["changes"]["batch_size"] == [16, 32]
    assert torch.load(run_dir / "snapshot.pt", weights_only=True)["provenance"] == sessions


@pytest.mark.slow
def test_drq_evaluate_plays_the_trainers_last_evaluation(runs_by_eval_workers, tmp_path):
    """``python -m drq.evaluate`` on one env repeats the evaluation the trainer ran on 3 workers at the snapshot's
    frame: the same episodes, the same mean return."""
    import csv

    from drq.evaluate import evaluate

    run_dir, _ = runs_by_eval_workers[3]
    result = evaluate(run_dir, episodes=3, size=16, out=tmp_path / "v.mp4")
    with open(run_dir / "eval.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert result["frame"] == int(last["frame"]) == 320
    assert len(set(result["returns"])) == 3
    assert result["mean_return"] == float(last["episode_reward"])
