"""A worker that dies does not end the run (issue 33): environments that die, hang or raise are replaced, the cut
training episode is stored as truncated, an evaluation episode is played again from its seed, and an env that keeps
failing ends the run with a snapshot, one line and exit code 3.

References: a brute-force model of the replay's transitions (plain loops over every step the trainer stored, the
cuts marked; nothing shared with replay/), the shared debug run (conftest's ``debug_run``: the same config without
failures) for the evaluations, and the worker's real exit status and stderr. Faults come from real ``kill -9`` of
worker processes at seeded moments and from tests/faulty_envs.py (an env that raises dm_control's PhysicsError or
hangs at a given step of a given episode), handed in through ``drq.run.build.env_factory``.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEBUG_RUN_OVERRIDES, compose_debug
from faulty_envs import PHYSICS_MESSAGE, TinyEnv, faulty_env_factory

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- the replay's brute force
def expected_transitions(steps: list[dict], k: int, n: int, gamma: float) -> dict[int, dict]:
    """Every transition the replay must hold, by the index of its first step, from the list of steps in the order
    they were stored (``first``, ``last``, ``discount``, ``reward``, ``action``). An episode ends at its ``last``
    step, or, cut short (its env failed), at its newest step before the next episode's first: a truncation, which
    keeps that step's discount. A transition starts at a step that does not end its episode and whose next ``n``
    steps are stored (or those up to the episode's end); the stacks repeat the episode's first frame. No eviction
    (the capacity exceeds the steps)."""
    starts, start = [], 0
    for g, step in enumerate(steps):
        start = g if step["first"] else start
        starts.append(start)
    ends = [step["last"] or (g + 1 < len(steps) and steps[g + 1]["first"]) for g, step in enumerate(steps)]
    out = {}
    for g, step in enumerate(steps):
        if ends[g]:
            continue
        reward, discount, m = 0.0, 1.0, None
        for i in range(1, n + 1):
            if g + i >= len(steps):
                break  # not stored yet
            reward += discount * steps[g + i]["reward"]
            discount *= gamma * steps[g + i]["discount"]
            if ends[g + i] or i == n:
                m = i
                break
        if m is None:
            continue
        out[g] = {"obs": [max(g - j, starts[g]) for j in range(k - 1, -1, -1)],
                  "next_obs": [max(g + m - j, starts[g]) for j in range(k - 1, -1, -1)],
                  "action": steps[g + 1]["action"], "reward": reward, "discount": discount}  # fmt: skip
    return out


def check_replay(replay, steps: list[dict]) -> int:
    """The replay holds exactly the brute force's transitions, with their frames, action, n-step reward and discount;
    returns how many."""
    expected = expected_transitions(steps, replay.frame_stack, replay.nstep, replay.gamma)
    assert len(replay) == len(expected)
    if not expected:
        return 0
    g = np.array(sorted(expected))
    batch = replay.gather(g)  # raises if any of them is not sampleable: with len() equal, the sets are equal
    frames = [np.asarray(s["frame"]) for s in steps]
    for row, start in enumerate(g):
        want = expected[start]
        assert np.array_equal(batch.obs[row].cpu().numpy(), np.concatenate([frames[i] for i in want["obs"]]))
        assert np.array_equal(batch.next_obs[row].cpu().numpy(), np.concatenate([frames[i] for i in want["next_obs"]]))
        assert np.array_equal(batch.action[row].cpu().numpy(), want["action"])
        assert batch.reward[row, 0].item() == pytest.approx(want["reward"], rel=1e-5, abs=1e-6)
        assert batch.discount[row, 0].item() == pytest.approx(want["discount"], rel=1e-6)
    return len(expected)


def recorded(replay) -> list[dict]:
    """Record every step ``replay`` stores from now on; a step that ``truncate_episode`` was called on gets ``cut``
    (for the tests' own checks: the brute force finds the cut episodes by itself)."""
    steps: list[dict] = []
    add, truncate = replay.add, replay.truncate_episode

    def recording_add(frame, action, reward, discount, first, last):
        steps.append({"frame": np.array(frame), "action": np.array(action, np.float32), "reward": float(reward),
                      "discount": float(discount), "first": bool(first), "last": bool(last)})  # fmt: skip
        add(frame=frame, action=action, reward=reward, discount=discount, first=first, last=last)

    def recording_truncate():
        truncate()
        steps[-1]["cut"] = True

    replay.add, replay.truncate_episode = recording_add, recording_truncate
    return steps


def test_truncate_episode_matches_brute_force():
    """Random episodes cut at random steps (and at their first step, and twice in a row): ``len()`` and every
    transition equal the brute force's after each cut; the frames encode (episode, step)."""
    from replay import FrameReplay

    rng = np.random.default_rng(33)
    for k, n in ((3, 3), (1, 1), (2, 5)):
        replay = FrameReplay(capacity=10_000, frame_shape=(3, 2, 2), action_shape=(2,), frame_stack=k, nstep=n,
                             discount=0.9)  # fmt: skip
        steps = recorded(replay)
        cuts = 0
        for episode in range(40):
            length, cut_at = int(rng.integers(1, 12)), int(rng.integers(0, 14))
            for t in range(length + 1):
                frame = np.array([episode, t, 7], np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
                reward, discount = (0.0, 1.0) if t == 0 else (float(rng.uniform(0, 2)), float(rng.choice([1.0, 0.5])))
                last = t == length and cut_at > length  # episodes that are not cut end on their own
                replay.add(frame, rng.uniform(-1, 1, 2).astype(np.float32), reward, discount, first=t == 0, last=last)
                if t == cut_at:
                    replay.truncate_episode()
                    steps[-1]["last"] = True  # the model's own record of the cut (the newest episode may be cut)
                    cuts += 1
                    if t % 2:
                        replay.truncate_episode()  # a second time: nothing changes
                    break
            check_replay(replay, steps)
        assert cuts > 10 and len(replay) > 100
        before = len(replay)
        replay.truncate_episode()  # the newest step already ends its episode: a no-op
        assert len(replay) == before and check_replay(replay, steps)


# ---------------------------------------------------------------------------------------- one worker, one line
def test_a_lost_worker_says_which_worker_its_exit_code_or_signal_and_its_last_stderr_line():
    """Killed by SIGKILL, exited with a code after a line on stderr, hung (killed after the timeout), or an
    exception in the env (re-raised with its own type, the worker alive and reaped at close)."""
    from drq.envs.worker import AsyncEnv, WorkerLost

    cases = {"kill": r"tiny worker \(pid \d+\) was killed by SIGKILL during step; its last stderr line: reset 5$",
             "exit": r"tiny worker \(pid \d+\) exited with code 7 during step; its last stderr line: tiny env: giving "
                     r"up now$",
             "hang": r"tiny worker \(pid \d+\) did not answer step within 2 s and was killed; its last stderr line: "
                     r"reset 5$"}  # fmt: skip
    for how, message in cases.items():
        env = AsyncEnv(functools.partial(TinyEnv, how), name="tiny", timeout_s=2.0, start_timeout_s=60.0)
        env.reset(seed=5)
        env.step(np.zeros(1, np.float32))
        process = env._process
        if how == "kill":
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
        started = time.monotonic()
        with pytest.raises(WorkerLost, match=message) as lost:
            env.step(np.zeros(1, np.float32))
        assert lost.value.hung == (how == "hang") and time.monotonic() - started < (10 if how == "hang" else 5)
        assert lost.value.exitcode == {"kill": -9, "exit": 7, "hang": -9}[how]
        assert not process.is_alive()
        with pytest.raises(RuntimeError, match="closed"):
            env.reset()
    with AsyncEnv(functools.partial(TinyEnv, "raise"), name="tiny", timeout_s=2.0) as env:
        env.reset()
        env.step(np.zeros(1, np.float32))
        with pytest.raises(ValueError, match="tiny env: bad step"):
            env.step(np.zeros(1, np.float32))
        assert env.step(np.zeros(1, np.float32)).reward == 1.0  # the worker lives on: replacing it is the caller's
        process = env._process
    assert not process.is_alive()


# ------------------------------------------------------------------------------- evaluation episodes played again
class CountingEnv:
    """An in-process env whose observation is (seed, step) and whose reward is a function of both and the action;
    it raises at the ``fail_at``-th step of its life (counted over all its episodes) when given."""

    observation_shape, action_shape = (2,), (1,)
    action_low, action_high = np.array([-1.0]), np.array([1.0])

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.steps, self.seed, self.t, self.action = fail_at, 0, 0, 0, None

    def reset(self, seed=None):
        from drq.envs.timestep import TimeStep

        self.seed, self.t = seed, 0
        return TimeStep(np.array([seed % 97, 0], np.uint8), np.zeros(1, np.float32), 0.0, 1.0, True, False)

    def step_async(self, action):
        self.action = float(action[0])

    def step_wait(self):
        from drq.envs.timestep import TimeStep

        self.steps += 1
        self.t += 1
        if self.steps == self.fail_at:
            raise FloatingPointError("diverged")
        reward = (self.seed % 13) * 0.1 + self.t * 0.01 + self.action
        return TimeStep(np.array([self.seed % 97, self.t], np.uint8), np.zeros(1, np.float32), reward, 1.0, False,
                        self.t == 6)  # fmt: skip

    def step(self, action):
        self.step_async(action)
        return self.step_wait()

    def render(self, size=256):
        return np.zeros((size, size, 3), np.uint8)

    def close(self):
        pass


def test_an_evaluation_episode_whose_env_fails_is_played_again_from_its_seed():
    """Five episodes on two envs that are replaced when they raise: env 0 at its 4th step (episode 0), then its
    replacement at its very first step (episode 0 again), env 1 at its 7th step (the first step of its second
    episode, 3). The returns equal those without failures; ``on_restart`` names each lost episode; the record
    callback sees each failed episode start over."""
    from drq.envs.restarting import RestartingEnv
    from drq.interfaces import Env
    from drq.run.evaluation import run_episodes

    def act(obs):
        return np.array([obs[1] * 0.05 - 0.1], np.float32)

    seeds = [11, 22, 33, 44, 55]
    clean = run_episodes([CountingEnv(), CountingEnv()], act, 5, 2, seeds=seeds)
    plans = [4, 7, 1]  # the step each env built fails at, in the order they are built (then: never)
    failures, lost, starts, built = [], [], [], []
    envs = [RestartingEnv(lambda: built.append(1) or CountingEnv(plans[len(built) - 1] if len(built) <= 3 else None),
                          f"eval env {k}", lambda *f: failures.append(f)) for k in range(2)]  # fmt: skip

    def on_step(episode, env, reward, episode_return, frames):
        if frames == 0:
            starts.append(episode)

    assert all(isinstance(env, Env) for env in envs)  # drq.interfaces' members: the trainer's env type
    again = run_episodes(envs, act, 5, 2, seeds=seeds, on_step=on_step, on_restart=lost.append)
    assert again == clean and len({r.episode_return for r in clean}) == 5
    assert failures == [(f"eval env {k}", f"eval env {k} raised FloatingPointError: diverged") for k in (0, 0, 1)]
    assert lost == [0, 0, 3] and len(built) == 5
    assert sorted(starts) == [0, 0, 0, 1, 2, 3, 3, 4]


def test_the_restart_limit_counts_each_env_within_the_window():
    """``env_restart_limit=2`` per ``env_restart_window_frames=100``: a third failure of one env within 100 frames
    ends the run (EnvKeptFailing, exit code 3), failures of other envs or older than the window do not count."""
    from types import SimpleNamespace

    from drq.run.restarts import EXIT_CODE, EnvKeptFailing, EnvRestarts
    from drq.run.state import RunState

    lines, rows = [], []
    cfg = SimpleNamespace(env_restart_limit=2, env_restart_window_frames=100)
    files = SimpleNamespace(restart=lambda *row: rows.append(row))
    state = RunState(action_repeat=4)
    restarts = EnvRestarts(SimpleNamespace(cfg=cfg, say=lines.append, files=files, wandb=None), state)
    for step, env in ((0, "train env"), (10, "eval env 0"), (20, "train env"), (26, "train env"), (40, "eval env 0")):
        state.step = step  # frames 0, 40, 80, 104, 160: the train env's failure at 0 is out of the window at 104
        restarts.failed(env, "it broke")
    assert state.worker_restarts == 5 and [row[3] for row in rows][-1] == "eval env 0" and rows[-1][-1] == 5
    assert lines[3] == ("env restart (frame 104): it broke; a new train env goes on with the next episode (restart 2 "
                        "of at most 2 of this env within 100 frames)")  # fmt: skip
    state.step = 27
    with pytest.raises(EnvKeptFailing, match=r"^train env failed 3 times within 100 frames \(env_restart_limit=2\), "
                                             r"the last at frame 108: it broke again$") as kept:  # fmt: skip
        restarts.failed("train env", "it broke again")
    assert kept.value.exit_code == EXIT_CODE == 3 and state.worker_restarts == 5


# -------------------------------------------------------------------------------------------- runs of the trainer
def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def jsonl(path: Path, section: str) -> list[dict]:
    return [line for line in map(json.loads, path.read_text().splitlines()) if line["section"] == section]


def check_counters(run_dir: Path, steps: list[dict], final_frame: int, action_repeat: int = 8) -> list[dict]:
    """Frames are exact: every counted agent step is one stored step after a first one; train.csv's rows add up
    (each row's frame = the last row's + its length, = step x action repeat); returns the rows."""
    assert sum(not s["first"] for s in steps) * action_repeat == final_frame
    train, frame = rows(run_dir / "train.csv"), 0
    for row in train:
        frame += int(row["episode_length"])
        assert int(row["frame"]) == frame == int(row["step"]) * action_repeat
    return train


@pytest.mark.slow
def test_faults_in_the_envs_are_ridden_through(tmp_path, monkeypatch, debug_run):
    """The training worker hangs at step 3 of the first episode (killed after env_timeout_seconds=4) and raises
    PhysicsError at step 4 of the third; the in-process evaluation env raises PhysicsError at step 2 of the first
    evaluation's first episode. One line each; the evaluation equals the failure-free shared run's; the cut episodes
    are train.csv rows of 16 and 24 frames, stored as truncated; the replay equals the brute force; the video of
    episode 0 is whole."""
    import imageio.v2 as imageio

    from drq.run import build, trainer
    from drq.run.seeds import episode_seeds, train_episode_seed

    cfg = compose_debug("eval_workers=1", "num_train_frames=400", "env_timeout_seconds=4", "save_video=true",
                        "video_size=64", base=DEBUG_RUN_OVERRIDES)  # fmt: skip
    seed = cfg["seed"]
    faults = {train_episode_seed(seed, 0): (3, "hang"), train_episode_seed(seed, 2): (4, "raise"),
              episode_seeds(seed, 0, 3)[0]: (2, "raise")}  # fmt: skip
    (tmp_path / "once").mkdir()
    monkeypatch.setattr(build, "env_factory", faulty_env_factory(faults, str(tmp_path / "once")))
    said = []
    t = trainer.Trainer(cfg, tmp_path / "run", say=said.append)
    steps = recorded(t.replay)
    t.train()

    lines = [s for s in said if s.startswith("env restart")]
    assert len(lines) == 3, said
    assert re.fullmatch(r"env restart \(frame 0\): eval env 0 raised PhysicsError: " + re.escape(PHYSICS_MESSAGE)
                        + r"; a new eval env 0 plays its evaluation episode again from the same seed \(restart 1 of "
                          r"at most 3 of this env within 12,000 frames\)", lines[0])  # fmt: skip
    assert re.fullmatch(r"env restart \(frame 16\): train env worker \(pid \d+\) did not answer step within 4 s and "
                        r"was killed(; its last stderr line: .*)?; a new train env goes on with the next episode "
                        r"\(restart 1 of at most 3 of this env within 12,000 frames\)", lines[1])
    assert lines[2].startswith(f"env restart (frame 240): train env raised PhysicsError: {PHYSICS_MESSAGE}; a new "
                               "train env goes on")
    restarts = jsonl(tmp_path / "run" / "metrics.jsonl", "restart")
    assert [(r["frame"], r["env"], r["worker_restarts"]) for r in restarts] == [
        (0, "eval env 0", 1), (16, "train env", 2), (240, "train env", 3)]
    assert jsonl(tmp_path / "run" / "metrics.jsonl", "train")[-1]["worker_restarts"] == 3

    # the evaluation at frame 0 is the failure-free run's (mean and std of its 3 episodes)
    ours, theirs = (jsonl(d / "metrics.jsonl", "eval")[0] for d in (tmp_path / "run", debug_run.run_dir))
    assert (ours["frame"], ours["episode_reward"], ours["episode_reward_std"]) == (
        0, theirs["episode_reward"], theirs["episode_reward_std"])
    video = [frame for frame in imageio.get_reader(tmp_path / "run" / "videos" / "eval_0.mp4")]
    assert len(video) == 200 // 8 + 1  # the partial recording of the failed try was dropped

    train = check_counters(tmp_path / "run", steps, 400)
    assert [(int(r["frame"]), int(r["episode_length"])) for r in train] == [(16, 16), (216, 200), (240, 24)]
    assert [g for g, s in enumerate(steps) if s.get("cut")] == [2, 32]  # the newest stored step of each cut episode
    assert check_replay(t.replay, steps) > 40


@pytest.mark.slow
def test_kill_9_of_the_workers_at_random_moments(tmp_path, monkeypatch, debug_run):
    """The shared run's config (training worker, two eval workers) with kill -9 of the training worker at 5 seeded
    moments (during the evaluation at frame 600, during a reset, during 3 steps while the agent updates) and of eval
    worker 1 during that evaluation: the run finishes, the evaluation at 600 equals the uninterrupted run's, every
    kill is one restart line, the frames are exact and the replay equals the brute force (no window crosses a
    restart)."""
    from drq.envs.worker import AsyncEnv
    from drq.run import trainer

    rng = random.Random(33)
    # moments after frame 600 (no kill earlier, so the agent at 600 is the shared run's): the n-th command of a kind
    train_steps = sorted(rng.sample(range(2, 70), 3))
    moments = {("train env", "reset", rng.randint(1, 2)), ("eval env 1", "step", rng.randint(1, 20)),
               *(("train env", "step", n) for n in train_steps)}
    cfg = compose_debug("env_restart_limit=8", base=DEBUG_RUN_OVERRIDES)
    t = trainer.Trainer(cfg, tmp_path, say=(said := []).append)
    counts: dict[tuple[str, str], int] = {}
    kills = []
    send, evaluate = AsyncEnv._send, t.evaluate

    def send_then_kill(self, command, args):
        send(self, command, args)
        if t.frame >= 600:
            key = (self.name, command)
            counts[key] = counts.get(key, 0) + 1
            if (*key, counts[key]) in moments:
                os.kill(self._process.pid, signal.SIGKILL)
                kills.append((t.frame, *key))

    def evaluate_while_the_train_worker_dies():
        if t.frame == 600:
            os.kill(t.train_env.env._process.pid, signal.SIGKILL)
            kills.append((600, "train env", "idle"))
        return evaluate()

    monkeypatch.setattr(AsyncEnv, "_send", send_then_kill)
    t.evaluate = evaluate_while_the_train_worker_dies
    steps = recorded(t.replay)
    t.train()
    print(f"\nkill -9 at {kills}")

    assert t.frame == 1200 and len(kills) == 6
    restarts = jsonl(tmp_path / "metrics.jsonl", "restart")
    assert sorted(r["env"] for r in restarts) == ["eval env 1"] + ["train env"] * 5
    assert all(re.fullmatch(r"(train env|eval env 1) worker \(pid \d+\) was killed by SIGKILL during (step|reset)"
                            r"(; its last stderr line: .*)?", r["reason"]) for r in restarts), restarts  # fmt: skip
    assert len([s for s in said if s.startswith("env restart")]) == 6
    assert jsonl(tmp_path / "metrics.jsonl", "train")[-1]["worker_restarts"] == 6
    evals = {int(r["frame"]): r["episode_reward"] for r in rows(tmp_path / "eval.csv")}
    reference = {int(r["frame"]): r["episode_reward"] for r in rows(debug_run.run_dir / "eval.csv")}
    assert sorted(evals) == [0, 600, 1200] and evals[0] == reference[0] and evals[600] == reference[600]
    train = check_counters(tmp_path, steps, 1200)
    cut_rows = [r for r in train if int(r["episode_length"]) < 200]  # every other episode ends at 200 frames
    assert len(cut_rows) == sum(bool(s.get("cut")) and not s["first"] for s in steps) >= 1
    assert check_replay(t.replay, steps) > 100


@pytest.mark.slow
def test_an_env_that_always_fails_stops_train_py_with_a_snapshot_one_line_and_exit_code_3(tmp_path):
    """Every reset raises: after env_restart_limit=3 restarts at frame 0 the fourth failure stops train.py with a
    snapshot, one ``drq:`` line naming the env, the count and the reason, no traceback and exit code 3."""
    run_dir = tmp_path / "run"
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import faulty_envs\n"
              "from drq.run import build\n"
              "build.env_factory = faulty_envs.faulty_env_factory({'any': (0, 'raise')})\n"
              f"sys.argv = ['train.py', 'preset=debug', 'task=cartpole_swingup', 'wandb.mode=disabled', "
              f"'async_env=false', 'eval_workers=1', 'hydra.run.dir={run_dir}']\n"
              "import runpy; runpy.run_path('train.py', run_name='__main__')\n")  # fmt: skip
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [s for s in result.stderr.splitlines() if s.startswith("drq:")]
    assert line == (f"drq: train env failed 4 times within 12,000 frames (env_restart_limit=3), the last at frame 0: "
                    f"train env raised PhysicsError: {PHYSICS_MESSAGE}; snapshot {run_dir / 'snapshot.pt'}; once the "
                    f"environment is fixed, resume with: python train.py hydra.run.dir={run_dir} (same overrides)")
    assert len([s for s in result.stdout.splitlines() if s.startswith("env restart (frame 0): train env raised")]) == 3
    snapshot = torch.load(run_dir / "snapshot.pt", weights_only=True)
    assert snapshot["counters"]["frame"] == 0 and snapshot["counters"]["worker_restarts"] == 3
