"""Runs that survive preemption: a real ``train.py`` (debug preset) in its own session, signalled as a scheduler does
(the whole process group), at seeded random moments, resumed each time, compared with a run that never stopped.

Reference: the same config trained once in-process without interruption. Every interrupted-and-resumed run must end
with the same train.csv / eval.csv / metrics.jsonl rows (wall-clock columns aside), the same agent parameters and the
same replay contents.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_state

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# 1200 frames = 6 episodes of 200 frames; evaluations (1 episode, a 64x64 video) at 0, 400, 800, 1200: kills land
# while starting, seeding (frames < 400), training, evaluating, writing videos and snapshots. The training env runs in
# its worker process (async_env), in the signalled group. Evaluation workers are the same AsyncEnv class (checked in
# test_stop_signals.py); two more processes per start would cost ~40% more here.
OVERRIDES = ["preset=debug", "task=cartpole_swingup", "num_train_frames=1200", "eval_every_frames=400",
             "num_eval_episodes=1", "video_size=64", "snapshot_every_frames=200", "async_env=true"]  # fmt: skip
FINAL = 1200
WALL_CLOCK = {"fps", "total_time"}


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*OVERRIDES, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    from drq.run import trainer

    run_dir = tmp_path_factory.mktemp("reference")
    trainer.run(compose("wandb.mode=disabled"), run_dir, say=lambda s: None)
    return run_dir


def start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_SILENT": "true"}
    cmd = [sys.executable, "train.py", *OVERRIDES, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def wait_until_training_starts(proc: subprocess.Popen, run_dir: Path, timeout: float = 120.0) -> None:
    """Until this process holds the run dir's lock (the Trainer is being built: torch and hydra are loaded)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if (run_dir / ".lock").read_text().strip() == str(proc.pid):
                return
        except OSError:
            pass
        time.sleep(0.02)


def wait_for_rows(proc: subprocess.Popen, run_dir: Path, rows: int, timeout: float = 180.0) -> None:
    """Until train.csv holds ``rows`` episodes (the process holds the lock: it is this session's progress, or the
    rows of earlier sessions that it resumed after) or the process ends."""
    wait_until_training_starts(proc, run_dir, timeout)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if len((run_dir / "train.csv").read_text().splitlines()) - 1 >= rows:
                return
        except OSError:
            pass
        time.sleep(0.02)


def start_and_signal(run_dir: Path, wandb_mode: str, rows: int, delay_s: float, sig: int) -> subprocess.Popen | None:
    """Start the run, wait until it has logged ``rows`` episodes, wait ``delay_s`` more, then send ``sig`` to its
    whole process group; None (nothing sent) if the run had already finished."""
    proc = start(run_dir, f"wandb.mode={wandb_mode}")
    wait_for_rows(proc, run_dir, rows)
    time.sleep(delay_s)
    if proc.poll() is not None:
        return None
    os.killpg(proc.pid, sig)
    return proc


def group_gone(pgid: int, timeout: float = 10.0) -> bool:
    """True once no process of the group is left (workers must not outlive the trainer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


def jsonl_rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in path.read_text().splitlines()]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same rows (wall clock aside), same parameters, same replay; no temporary files left; every video there."""
    for name in ("train.csv", "eval.csv"):
        assert csv_rows(run_dir / name) == csv_rows(reference / name), name
    assert jsonl_rows(run_dir / "metrics.jsonl") == jsonl_rows(reference / "metrics.jsonl")
    ours = torch.load(run_dir / "snapshot.pt", weights_only=True)
    theirs = torch.load(reference / "snapshot.pt", weights_only=True)
    assert ours["counters"]["frame"] == theirs["counters"]["frame"] == FINAL
    for part in ("agent", "replay"):
        assert assert_same_state(ours[part], theirs[part], part) > 5, part
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == sorted(
        p.name for p in (reference / "videos").iterdir())  # fmt: skip
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


# Episodes logged before each SIGTERM / SIGKILL. Each kill costs one train.py start (~17 s of CPU on 2 cores), so the
# default suite signals at 2 SIGTERM moments (the first and the last: while starting, and after the last training
# episode) and 1 SIGKILL moment (after 2 episodes: seeding over, snapshot, evaluation and video writes around it);
# DRQ_PREEMPTION_MOMENTS=N signals at N SIGTERM moments spread over these ten and at min(N - 1, 3) SIGKILL moments:
# 4 gives the earlier default (4 and 3), 10 all ten SIGTERM moments, as for the record (docs/clusters.md).
SIGTERM_MOMENTS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 5)
SIGKILL_MOMENTS = {1: (2,), 2: (0, 4), 3: (0, 2, 4)}


def preemption_moments() -> int:
    n = int(os.environ.get("DRQ_PREEMPTION_MOMENTS", "2"))
    if not 2 <= n <= len(SIGTERM_MOMENTS):
        raise ValueError(f"DRQ_PREEMPTION_MOMENTS must be 2..{len(SIGTERM_MOMENTS)}, got {n}")
    return n


def sigterm_schedule() -> list[int]:
    n, last = preemption_moments(), len(SIGTERM_MOMENTS) - 1
    return [SIGTERM_MOMENTS[round(i * last / (n - 1))] for i in range(n)]


def sigkill_schedule() -> tuple[int, ...]:
    return SIGKILL_MOMENTS[min(preemption_moments() - 1, 3)]


def test_group_sigterm_at_random_moments_resumes_exactly(tmp_path, reference):
    """Seeded random moments of `kill -TERM -PGID` (2 by default, DRQ_PREEMPTION_MOMENTS=10 for all): each gives exit
    143, one drq line, a snapshot, no process left; the run then finishes with the rows, parameters and replay of the
    run that never stopped."""
    rng = random.Random(15)
    run_dir, frames, kills = tmp_path / "run", [], 0
    # the k-th kill comes a random 0-2 s after the run has logged ROWS[k] episodes (0: while it starts), so that the
    # run makes progress whatever the machine's speed and the moments spread over all its phases
    schedule = sigterm_schedule()
    for rows in schedule:
        proc = start_and_signal(run_dir, "disabled", rows, rng.uniform(0.0, 2.0), signal.SIGTERM)
        if proc is None:
            break
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 143, err[-3000:]
        drq_lines = [line for line in err.splitlines() if line.startswith("drq:")]
        assert len(drq_lines) == 1 and drq_lines[0].startswith("drq: SIGTERM at frame"), err[-3000:]
        assert "Traceback" not in out + err
        assert group_gone(proc.pid), "a process of the run outlived the trainer"
        frame = torch.load(run_dir / "snapshot.pt", weights_only=True)["counters"]["frame"]
        assert frame >= (frames[-1] if frames else 0)
        frames.append(frame)
        kills += 1
    print(f"\nSIGTERM to the group at {len(schedule)} moments: snapshot frames {frames}")
    assert kills == len(schedule)
    proc = start(run_dir, "wandb.mode=disabled")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert_same_run(run_dir, reference)


def test_kill_9_at_random_moments_loses_at_most_one_snapshot_interval_and_tears_nothing(tmp_path, reference):
    """SIGKILL to the whole group at seeded random moments (1 by default, around snapshot and video writes;
    DRQ_PREEMPTION_MOMENTS>=4 for 3, also before the first snapshot), resumed each time: every snapshot loads, at
    most one snapshot interval (200 frames) of logged rows is lost, and the finished run equals the uninterrupted one;
    one wandb run id throughout."""
    rng = random.Random(9)
    run_dir, kills, resumed_frames = tmp_path / "run", 0, []
    for rows in sigkill_schedule():
        proc = start_and_signal(run_dir, "offline", rows, rng.uniform(0.0, 2.0), signal.SIGKILL)
        if proc is None:
            break
        proc.communicate(timeout=60)
        kills += 1
        rows = (run_dir / "train.csv").read_text().splitlines() if (run_dir / "train.csv").exists() else []
        complete = [r for r in rows[1:] if r.count(",") == 6]
        last_row_frame = int(complete[-1].split(",")[0]) if complete else 0
        if (run_dir / "snapshot.pt").exists():
            frame = torch.load(run_dir / "snapshot.pt", weights_only=True)["counters"]["frame"]  # always loads
            assert frame >= last_row_frame - 200
        else:
            frame = 0
            assert last_row_frame <= 200
        resumed_frames.append(frame)
    print(f"\nkill -9 to the group at {kills} moments: snapshot frames {resumed_frames}")
    proc = start(run_dir, "wandb.mode=offline")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert_same_run(run_dir, reference)
    ids = {p.name.rsplit("-", 1)[1] for p in run_dir.glob("wandb/offline-run-*")}
    assert len(ids) == 1, ids


def test_a_second_run_on_the_same_run_dir_is_refused(tmp_path):
    from drq.run import lock as run_dir_lock
    from drq.run import trainer

    held = run_dir_lock.acquire(tmp_path)
    with pytest.raises(run_dir_lock.RunDirLocked, match=f"in use by another run \\(pid {os.getpid()}\\)"):
        trainer.Trainer(compose("wandb.mode=disabled"), tmp_path, say=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing read or written
    held.release()
    run_dir_lock.acquire(tmp_path).release()  # free again once the holder lets go
