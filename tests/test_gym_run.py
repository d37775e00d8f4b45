"""A Gymnasium env through everything a DMC task goes through: the env worker, evaluation workers with per-episode
seeds, videos, exact resume, ``python -m drq.evaluate``, run.json, the health report, the sweep report, and
``train.py`` with the README's command for the example env.

One uninterrupted run of InvertedPendulum-v5 (debug preset: 48x48, action repeat 8; a MuJoCo env: the second renderer
makes the 256x256 videos) is shared by the checks that only read it; a second run is killed after its snapshot at
frame 600 and resumed with another number of eval workers. References: the uninterrupted run (rows, parameters),
imageio (the mp4), json/csv readers.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SnapshotCrash, assert_same_state, compose_debug, crash_after_snapshot

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

PENDULUM = ("task=gym", "gym.id=InvertedPendulum-v5", "wandb.mode=disabled", "num_train_frames=1200",
            "eval_every_frames=600", "snapshot_every_frames=600", "num_eval_episodes=3", "async_env=true")  # fmt: skip


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    """(whole run dir, its trainer, resumed run dir, its trainer): eval_workers=2 with videos; the resumed one killed
    after its first snapshot past frame 600 and resumed with eval_workers=1 (one in-process eval env)."""
    from drq.run import trainer

    root = tmp_path_factory.mktemp("pendulum")
    whole = trainer.run(compose_debug(*PENDULUM, "eval_workers=2", "save_video=true", base=("preset=debug",)),
                        root / "whole", say=lambda s: None)  # fmt: skip
    split = root / "split"
    with crash_after_snapshot(600), pytest.raises(SnapshotCrash):
        trainer.run(compose_debug(*PENDULUM, "eval_workers=2", "save_video=false", base=("preset=debug",)), split,
                    say=lambda s: None)  # fmt: skip
    said = []
    resumed = trainer.run(compose_debug(*PENDULUM, "eval_workers=1", "save_video=false", base=("preset=debug",)),
                          split, say=said.append)  # fmt: skip
    assert any("resumed from" in s for s in said), said
    return root / "whole", whole, split, resumed


def test_resume_and_eval_workers_change_nothing(pendulum):
    """Killed at frame 600 and resumed with 1 eval env instead of 2 workers: the same training episodes, the same
    evaluations and bit-identical parameters (CPU, fixed seed)."""
    whole_dir, whole, split_dir, resumed = pendulum
    for name, columns in (("train.csv", ("frame", "step", "episode", "episode_reward")),
                          ("eval.csv", ("frame", "step", "episode_reward", "episode_length"))):  # fmt: skip
        a, b = rows(whole_dir / name), rows(split_dir / name)
        assert len(a) == len(b) > (2 if name == "eval.csv" else 10)
        assert [[r[c] for c in columns] for r in a] == [[r[c] for c in columns] for r in b], name
    assert assert_same_state(whole.agent.state_dict(), resumed.agent.state_dict(), "agent") > 10


def test_videos_are_the_envs_own_render_at_the_video_size(pendulum):
    import imageio.v2 as imageio

    whole_dir = pendulum[0]
    frames = [f for f in imageio.get_reader(whole_dir / "videos" / "eval_600.mp4")]
    assert len(frames) >= 2 and frames[0].shape == (256, 256, 3)
    assert np.asarray(frames[0]).std() > 5  # the pendulum and the rail, not a blank picture


def test_run_json_names_the_env_and_gymnasium(pendulum):
    whole_dir = pendulum[0]
    record = json.loads((whole_dir / "run.json").read_text())
    run = record["run"]
    assert (run["task"], run["action_shape"], run["action_dim"], run["observation_shape"]) == (
        "InvertedPendulum-v5", [1], 1, [9, 48, 48])  # fmt: skip
    assert run["gym"] == {"id": "InvertedPendulum-v5", "registered": True, "max_episode_steps": 1000,
                          "entry_point": "gymnasium.envs.mujoco.inverted_pendulum_v5:InvertedPendulumEnv"}
    import gymnasium

    assert record["sessions"][0]["versions"]["gymnasium"] == gymnasium.__version__


def test_drq_evaluate_repeats_the_last_evaluation_with_a_camera(pendulum, tmp_path, capsys):
    import imageio.v2 as imageio

    from drq import evaluate

    whole_dir = pendulum[0]
    last = rows(whole_dir / "eval.csv")[-1]
    assert evaluate.main([str(whole_dir), "--episodes", "3", "--size", "96", "--camera", "-1",
                          "--out", str(tmp_path / "e.mp4")]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "InvertedPendulum-v5" and result["frame"] == int(last["frame"]) == 1200
    assert result["mean_return"] == pytest.approx(float(last["episode_reward"]), rel=1e-9)
    assert imageio.get_reader(tmp_path / "e.mp4").get_data(0).shape == (96, 96, 3)


def test_the_health_and_sweep_reports_read_gymnasium_runs(pendulum, tmp_path):
    from drq.analysis import health, report

    whole_dir, _, split_dir, _ = pendulum
    assert health.main([str(whole_dir)]) == 0
    assert (whole_dir / "health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    warned = []
    path = report.write_report(whole_dir.parent, out_dir=tmp_path / "report", reps=200, curve_reps=50,
                               warn=warned.append)  # fmt: skip
    text = path.read_text()
    assert "| InvertedPendulum-v5 | drqv2 |" in text and "not DMC tasks (Gymnasium envs, task=gym)" in text


def test_train_py_trains_the_example_from_the_readme_command(tmp_path):
    """The README's command for the example env (examples/point_reach.py), shortened by the debug preset: a fresh
    train.py is the point (the pre-hydra env probe in a worker, hydra, the run)."""
    run_dir = tmp_path / "example"
    done = subprocess.run([sys.executable, "train.py", "task=gym", "gym.id=examples.point_reach:PointReach",
                           "preset=debug", "num_train_frames=800", "eval_every_frames=400", "wandb.mode=disabled",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task=examples.point_reach:PointReach" in done.stdout.splitlines()[0]
    evals = rows(run_dir / "eval.csv")
    assert [int(r["frame"]) for r in evals] == [0, 400, 800] and all(float(r["episode_reward"]) < 0 for r in evals)
    assert (run_dir / "videos" / "eval_800.mp4").is_file() and (run_dir / "snapshot.pt").is_file()


def test_a_loaded_policy_acts_on_a_gymnasium_envs_pictures_as_the_agent_did(pendulum):
    """drq.load_policy given the raw pictures of a Gymnasium env rendered at 90 px (so the env and the policy both
    resize them to the run's 48 px, drq.envs.frames) stacks exactly the observations the env gave the agent (bit for
    bit: another interpolation fails here) and acts as the trained agent (fp32) did on them, episode after episode
    (the policy's frame stack restarted by reset())."""
    import drq
    from drq.config import schema as config_schema
    from drq.envs.gym_pixels import GymPixelEnv
    from drq.run import snapshot as snapshots
    from drq.run.build import make_agent_from_config

    whole_dir = pendulum[0]
    state = snapshots.load(whole_dir)
    cfg = config_schema.from_saved(state["config"])
    env = GymPixelEnv("InvertedPendulum-v5", kwargs={"width": 90, "height": 90}, frame_stack=cfg.frame_stack,
                      action_repeat=cfg.action_repeat, seed=cfg.seed, size=cfg.image_size)  # fmt: skip
    agent = make_agent_from_config(cfg, env.observation_shape, env.action_shape, "cpu", "fp32")
    agent.load_state_dict(state["agent"])
    policy = drq.load_policy(whole_dir)
    ours, theirs = [], []
    for seed in (11, 12, 13):
        ts, _ = env.reset(seed=seed), policy.reset()
        for _ in range(30):
            assert env._picture.shape == (90, 90, 3)  # the raw picture, before the env's resize
            ours.append(policy.act(env._picture))
            assert np.array_equal(policy._stacks[0].observation(), ts.observation)  # the frames the agent saw
            theirs.append(agent.act(ts.observation, int(state["counters"]["step"]), eval_mode=True))
            ts = env.step(theirs[-1])
            if ts.last:
                break
    env.close()
    ours, theirs = np.stack(ours), np.stack(theirs) * 3.0  # the policy gives the env's bounds, [-3, 3]
    assert len(ours) >= 6 and np.abs(ours - theirs).max() <= 1e-5
