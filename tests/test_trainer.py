"""End-to-end runs of the trainer on a real DMC task (debug preset: 48x48, tiny networks; most runs shortened to 1200
frames with evaluations at 0, 600 and 1200, :data:`SHORT`).

Each run takes ~5 s of CPU; checks that only read a finished run share one (conftest's ``debug_run``). Checked
against independent readers: the CSV / JSONL files with csv/json, the video with imageio (ffmpeg). What wandb receives
is read through wandb's public API: ``wandb.init`` replaced by a recorder of the ``Run.log`` calls (wandb's files are a
private record format, and ``wandb.Api`` needs its server); a real offline run is checked for its folder and its
``wandb sync`` line.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (DEBUG_RUN_OVERRIDES, SnapshotCrash, assert_same_state, compose_debug, crash_after_snapshot,
                      flat_state)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

BASE = ["preset=debug", "task=cartpole_swingup", "wandb.mode=disabled"]
# The debug preset's 2000 frames shortened to 1200 (6 episodes of 200 frames; updates from frame 400): evaluations and
# snapshots at 0, E = 600 and 2E = 1200, as the preset has them at 0, 1000 and 2000. The shared run (conftest) too.
SHORT = ("num_train_frames=1200", "eval_every_frames=600", "snapshot_every_frames=600")
FRAMES, EVAL_FRAMES = 1200, [0, 600, 1200]


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*BASE, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RecordedRun:
    """What ``wandb.init`` returns, as far as the trainer uses it (``Run.log``, ``define_metric``, ``id``, ``dir``,
    ``finish``), recording every call. The media objects it receives are wandb's own ``Histogram`` and ``Video``."""

    def __init__(self, **init_kwargs):
        self.init_kwargs, self.rows, self.step_metric, self.exit_code = init_kwargs, [], {}, None
        self.id, self.dir = "recorded", None

    def define_metric(self, name, step_metric=None, **kwargs):
        self.step_metric[name] = step_metric

    def log(self, data):
        self.rows.append(dict(data))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def run_train_py(run_dir: Path, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "train.py", *BASE, f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- end to end
def check_run_dir(run_dir: Path, frames: int = FRAMES, eval_frames: list[int] = EVAL_FRAMES) -> None:
    import imageio.v2 as imageio

    train = rows(run_dir / "train.csv")
    assert [int(r["frame"]) for r in train] == list(range(200, frames + 1, 200))  # 200-frame debug episodes
    assert all(int(r["step"]) * 8 == int(r["frame"]) for r in train)  # action_repeat 8
    evals = rows(run_dir / "eval.csv")
    assert [int(r["frame"]) for r in evals] == eval_frames
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sections = {line["section"] for line in lines}
    assert sections == {"train", "eval", "health"}
    health = [line for line in lines if line["section"] == "health"]
    assert {"actor_logprob", "critic_loss", "actor_entropy", "actor_saturation"} <= set(health[0])
    assert all(np.isfinite(line["critic_loss"]) for line in health)
    # eval rows in the JSONL are the CSV's
    assert [line["episode_reward"] for line in lines if line["section"] == "eval"] == pytest.approx(
        [float(r["episode_reward"]) for r in evals]
    )
    state = torch.load(run_dir / "snapshot.pt", weights_only=True)
    assert state["counters"]["frame"] == frames
    for name in (f"eval_{frame}.mp4" for frame in eval_frames):
        reader = imageio.get_reader(run_dir / "videos" / name)
        video = [f for f in reader]
        assert video and all(f.shape == (256, 256, 3) for f in video)
        assert len(video) == 200 // 8 + 1  # reset picture + one per agent step
        assert reader.get_meta_data()["codec"] == "h264"


def test_train_py_drqv2_end_to_end_with_offline_wandb(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train_py(run_dir, "agent=drqv2", "wandb.mode=offline", "async_env=true", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    check_run_dir(run_dir)
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "wandb sync" in result.stdout + result.stderr
    # one summary line per evaluation, and (stdout is not a terminal) one progress line per finished eval episode
    assert len(re.findall(r"^eval \| frame +[\d,]+ \| step ", result.stdout, re.M)) == 3
    assert len(re.findall(r"^eval \| frame [\d,]+ \| episode 1/1 \| return ", result.stdout, re.M)) == 3
    # the run's own JSONL (what the wandb sink is handed, test_sac_end_to_end_in_process): every section against frame
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if line["section"] == "eval"]
    assert [line["frame"] for line in evals] == EVAL_FRAMES
    assert [line["episode_reward"] for line in evals] == pytest.approx(
        [float(r["episode_reward"]) for r in rows(run_dir / "eval.csv")]
    )
    assert {"actor_logprob", "critic_loss"} <= set().union(*(x for x in lines if x["section"] == "health"))
    assert all("episode_reward" in x for x in lines if x["section"] == "train")
    # a real offline wandb run: one folder, the one `wandb sync` is told
    (offline,) = run_dir.glob("wandb/offline-run-*")
    assert f"wandb sync {offline}" in result.stdout + result.stderr
    (record_log,) = offline.glob("run-*.wandb")
    assert record_log.stat().st_size > 0


def test_sac_end_to_end_in_process(tmp_path, monkeypatch, capsys):
    import wandb

    from drq.run.trainer import run

    runs, said = [], []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(RecordedRun(**kwargs)) or runs[-1])
    # SAC updates every agent step (DrQ-v2 every second one): 800 frames, evaluations at 0, 400 and 800, a histogram
    # at 800; updates from frame 400
    sac_eval_frames = [0, 400, 800]
    run(compose("agent=sac", "async_env=false", "wandb.mode=offline", "num_train_frames=800", "eval_every_frames=400"),
        tmp_path, say=said.append)  # fmt: skip
    check_run_dir(tmp_path, 800, sac_eval_frames)
    # not a terminal: every evaluation says each finished episode (drq.run.evaluation.EvalProgress), before its summary
    for row in rows(tmp_path / "eval.csv"):
        progress = [s for s in said if s.startswith(f"eval | frame {int(row['frame']):,} | episode ")]
        assert [s.split(" | ")[2] for s in progress] == ["episode 1/1"], said
        assert f"return {float(row['episode_reward']):.1f} |" in progress[0] and "frames/s | ETA 0:00:00" in progress[0]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    health = [line for line in lines if line["section"] == "health"]
    assert {"alpha", "alpha_loss", "target_entropy"} <= set(health[0])

    # what wandb received: every section against frame, the eval returns of eval.csv, the health lines of the JSONL,
    # the histograms and the videos
    (wb,) = runs
    assert wb.init_kwargs["mode"] == "offline" and wb.init_kwargs["dir"] == str(tmp_path) and wb.exit_code == 0
    assert all(wb.step_metric[f"{section}/*"] == "frame" for section in ("train", "eval", "health", "histograms"))
    assert all("frame" in row for row in wb.rows)
    evals = [row for row in wb.rows if "eval/episode_reward" in row]
    assert [row["frame"] for row in evals] == sac_eval_frames
    assert [row["eval/episode_reward"] for row in evals] == pytest.approx(
        [float(r["episode_reward"]) for r in rows(tmp_path / "eval.csv")]
    )
    keys = set().union(*wb.rows)
    assert {"health/actor_logprob", "health/critic_loss", "train/episode_reward", "frame"} <= keys
    wb_health = [row for row in wb.rows if "health/actor_logprob" in row]
    assert [{"frame": row["frame"], **{k[len("health/"):]: v for k, v in row.items() if k != "frame"}}
            for row in wb_health] == [
        {k: v for k, v in line.items() if k not in ("section", "step", "total_time")} for line in health]
    histograms = [row["histograms/actor_logprob"] for row in wb.rows if "histograms/actor_logprob" in row]
    assert histograms and all(isinstance(h, wandb.Histogram) for h in histograms)
    videos = [row for row in wb.rows if "video/eval" in row]
    assert [row["frame"] for row in videos] == sac_eval_frames
    assert all(isinstance(row["video/eval"], wandb.Video) for row in videos)

    # python -m drq.evaluate on the run dir: rebuilds the agent from the snapshot's config, exports a video
    import imageio.v2 as imageio

    from drq import evaluate

    out = tmp_path / "eval_export.mp4"
    capsys.readouterr()
    assert evaluate.main([str(tmp_path), "--episodes", "1", "--size", "96", "--camera", "1", "--out", str(out)]) == 0
    assert re.search(r"^evaluate \| frame [\d,]+ \| episode 1/1 \| return \S+ \| \d+ frames/s \| ETA 0:00:00$",
                     capsys.readouterr().err, re.M)  # progress on stderr, results on stdout
    frames = [f for f in imageio.get_reader(out)]
    assert len(frames) == 200 // 8 + 1 and frames[0].shape == (96, 96, 3)
    assert evaluate.main([str(tmp_path / "nope")]) == 1

    # python -m drq.analysis.health on the same tiny real run: a PNG report and a verdict per signal
    from drq.analysis import health as health_report

    (tmp_path / "health.png").unlink(missing_ok=True)
    assert health_report.main([str(tmp_path), "--agent", "sac"]) == 0
    assert (tmp_path / "health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------- resume
# 1-env: the training env and the one evaluation env in this process; 2-workers: the training env in its worker, three
# evaluation episodes on two eval workers (the shared run's config)
@pytest.mark.parametrize("eval_overrides", [("async_env=false",),
                                            ("async_env=true", "num_eval_episodes=3", "eval_workers=2")],
                         ids=["1-env", "2-workers"])  # fmt: skip
def test_resume_after_crash_equals_uninterrupted_run(tmp_path, eval_overrides, request):
    from drq.run import trainer

    cfg = compose("agent=drqv2", "save_video=false", *SHORT, *eval_overrides)
    if cfg == compose_debug(base=DEBUG_RUN_OVERRIDES):  # 2-workers: the uninterrupted run is the shared one
        shared = request.getfixturevalue("debug_run")
        whole, whole_dir = shared.trainer, shared.run_dir
    else:
        whole_dir = tmp_path / "whole"
        whole = trainer.run(cfg, whole_dir, say=lambda s: None)
    assert ("eval_workers=2" in eval_overrides) == (whole_dir != tmp_path / "whole"), "2-workers reads the shared run"

    with crash_after_snapshot(600), pytest.raises(SnapshotCrash):
        trainer.run(cfg, tmp_path / "split", say=lambda s: None)
    assert len(rows(tmp_path / "split" / "eval.csv")) == 1  # frame 0; the eval at 600 comes after the snapshot
    said = []
    resumed = trainer.run(cfg, tmp_path / "split", say=said.append)
    assert any("resumed from" in s and "frame 600" in s for s in said)

    assert resumed.frame == whole.frame == FRAMES
    for name in ("train.csv", "eval.csv"):
        a, b = rows(whole_dir / name), rows(tmp_path / "split" / name)
        assert len(a) == len(b)
        for ra, rb in zip(a, b):  # same episodes, same returns (wall-clock columns differ)
            assert (ra["frame"], ra["step"], ra["episode"], ra["episode_reward"]) == (
                rb["frame"], rb["step"], rb["episode"], rb["episode_reward"])  # fmt: skip
    assert assert_same_state(whole.agent.state_dict(), resumed.agent.state_dict(), "agent") > 10


def test_eval_workers_play_the_episodes_of_their_seeded_envs(debug_run):
    """eval_workers=2, 3 episodes: episode j of the evaluation at frame F starts from the state drawn from
    (seed, F, j), whichever worker plays it. Reference: the trained agent played by hand on one in-process env,
    reset with those seeds (drq.run.evaluation.episode_seeds)."""
    from drq.envs.pixels import make_env
    from drq.run.evaluation import episode_seeds
    from drq.run.build import env_kwargs

    cfg, trainer = debug_run.cfg, debug_run.trainer
    assert (cfg["agent"]["name"], cfg["num_eval_episodes"], cfg["eval_workers"]) == ("drqv2", 3, 2)
    final = rows(debug_run.run_dir / "eval.csv")[-1]
    frame = int(final["frame"])

    def play(env, seed: int) -> float:
        ts, ret, frames = env.reset(seed=seed), 0.0, 0
        while not ts.last and frames < 200:
            ts = env.step(trainer.agent.act(ts.observation, trainer.step, eval_mode=True))
            ret, frames = ret + ts.reward, frames + 8
        return ret

    env = make_env(**env_kwargs(cfg))
    returns = [play(env, seed) for seed in episode_seeds(cfg["seed"], frame, 3)]
    env.close()
    assert len(set(returns)) == 3  # different starts: the reference can tell the episodes apart
    assert float(final["episode_reward"]) == pytest.approx(sum(returns) / 3, rel=1e-6)


def test_resume_without_replay_says_so(tmp_path):
    from drq.run import trainer

    cfg = compose("num_train_frames=400", "save_replay_in_snapshot=false", "async_env=false", "save_video=false")
    trainer.run(cfg, tmp_path, say=lambda s: None)
    assert torch.load(tmp_path / "snapshot.pt", weights_only=True)["replay"] is None
    said = []
    trainer.run(compose("num_train_frames=800", "async_env=false", "save_video=false"), tmp_path, say=said.append)
    assert any("replay starts empty" in s for s in said)
    assert [int(r["frame"]) for r in rows(tmp_path / "train.csv")] == [200, 400, 600, 800]


# ------------------------------------------------------------------------------------------------ failures
def test_non_finite_loss_stops_with_metric_and_frame_and_keeps_snapshot(tmp_path, monkeypatch):
    from drq.run import trainer

    cfg = compose("async_env=false", "snapshot_every_frames=400", "save_video=false")
    t = trainer.Trainer(cfg, tmp_path, say=lambda s: None)
    real_update = t.agent.update

    def poisoned(batch, step):
        metrics = real_update(batch, step)
        if step * 8 >= 600:
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics

    t.agent.update = poisoned
    with pytest.raises(trainer.NonFiniteMetricError) as info:
        t.train()
    message = str(info.value)
    assert "non-finite critic_loss" in message and "at frame 800" in message  # first log after frame 600
    state = torch.load(tmp_path / "snapshot.pt", weights_only=True)
    assert state["counters"]["frame"] == 400  # the last snapshot before the NaN, not overwritten
    params = [v.flatten().float() for v in flat_state(state["agent"]).values()
              if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert params and torch.isfinite(torch.cat(params)).all()


def test_disk_full_while_writing_snapshot_and_video_warns_and_goes_on(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    from drq.run import snapshot
    from drq.run import trainer

    real_torch_save, real_writer = torch.save, imageio.get_writer
    calls = {"snapshot": 0, "video": 0}

    def full_torch_save(obj, f, *args, **kwargs):
        calls["snapshot"] += 1
        if calls["snapshot"] >= 2:  # the first snapshot (frame 600) succeeds, later ones hit a full disk
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_torch_save(obj, f, *args, **kwargs)

    def full_writer(path, *args, **kwargs):
        calls["video"] += 1
        if calls["video"] == 2:  # the eval at frame 600
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writer(path, *args, **kwargs)

    monkeypatch.setattr(snapshot.torch, "save", full_torch_save)
    monkeypatch.setattr(imageio, "get_writer", full_writer)
    with pytest.warns(RuntimeWarning, match="disk full") as caught:
        trainer.run(compose("async_env=false", "video_size=64", *SHORT), tmp_path, say=lambda s: None)  # small videos
    texts = [str(w.message) for w in caught]
    assert any("snapshot" in t and "previous snapshot is kept" in t for t in texts)
    assert any("video" in t for t in texts)
    assert len(rows(tmp_path / "eval.csv")) == 3  # training went on to the end
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["eval_0.mp4", "eval_1200.mp4"]
    state = torch.load(tmp_path / "snapshot.pt", weights_only=True)
    assert state["counters"]["frame"] == 600  # the intact previous snapshot
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_corrupt_snapshot_is_a_clear_error_and_nothing_is_overwritten(tmp_path):
    (tmp_path / "snapshot.pt").write_bytes(b"not a snapshot")
    (tmp_path / "train.csv").write_text("frame,step\n1,2\n")
    result = run_train_py(tmp_path, "async_env=false")
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "corrupt" in err[0] and "snapshot.pt" in err[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert (tmp_path / "snapshot.pt").read_bytes() == b"not a snapshot"
    assert (tmp_path / "train.csv").read_text() == "frame,step\n1,2\n"


def test_incompatible_snapshot_names_the_difference(tmp_path):
    from drq.run import snapshot
    from drq.run import trainer

    snapshot.save(tmp_path / "snapshot.pt", {"config": {**compose(), "task_name": "walker_walk"}})
    before = (tmp_path / "snapshot.pt").read_bytes()
    with pytest.raises(snapshot.SnapshotError, match="task_name: snapshot 'walker_walk', now 'cartpole_swingup'"):
        trainer.Trainer(compose("async_env=false"), tmp_path, say=lambda s: None)
    assert (tmp_path / "snapshot.pt").read_bytes() == before


def test_ctrl_c_saves_a_snapshot_and_the_run_resumes(tmp_path):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "train.py", *BASE, f"hydra.run.dir={tmp_path}", "async_env=false", "save_video=false",
           "wandb.mode=offline"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "train.csv").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGINT at frame" in err and "resume with" in err and "Traceback" not in err
    frame = torch.load(tmp_path / "snapshot.pt", weights_only=True)["counters"]["frame"]
    assert 0 < frame < 600  # stopped in its first episodes (train.csv appears at frame 200)
    # the resumed session trains to frame 600 (num_train_frames may change on resume): past the seed frames (400)
    result = run_train_py(tmp_path, "async_env=false", "save_video=false", "wandb.mode=offline", "num_train_frames=600")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(tmp_path.glob("wandb/offline-run-*"))  # one folder per session, both the same wandb run
    assert len(runs) == 2 and len({p.name.rsplit("-", 1)[1] for p in runs}) == 1
    assert f"resumed from {tmp_path / 'snapshot.pt'} at frame {frame:,}" in result.stdout
    assert torch.load(tmp_path / "snapshot.pt", weights_only=True)["counters"]["frame"] == 600
    assert int(rows(tmp_path / "eval.csv")[-1]["frame"]) == 600
