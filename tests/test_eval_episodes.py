"""drq.run.evaluation: episodes on several environments in lockstep, checked against playing each environment's
episodes one after another (a brute-force loop), with scripted environments whose rewards encode who stepped; and the
progress report (EvalProgress: bar on a terminal, one line per episode otherwise) against a fake clock that each env
step advances, so frames/s and the ETA have exact expected values."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pytest

from drq.run.evaluation import EpisodeResult, EvalProgress, Progress, resets_per_env, run_episodes


@dataclass
class Step:
    observation: np.ndarray
    reward: float
    last: bool


class ScriptedEnv:
    """Episode ``n`` (its n-th reset) lasts ``lengths[n]`` steps; the reward of step t is ``env_id * 1000 + n * 10 +
    action`` so that a result says which env, which of its episodes and which action produced it. Like
    ``drq.envs.pixels.PixelEnv``, ``step_async`` stores the action and ``step_wait`` runs it."""

    pending = None

    def __init__(self, env_id: int, lengths: list[int]):
        self.env_id, self.lengths, self.resets, self.t = env_id, lengths, -1, 0
        self.log: list[tuple] = []

    def reset(self) -> Step:
        self.resets += 1
        self.t = 0
        self.log.append(("reset", self.resets))
        return Step(np.full((1,), self.env_id * 100 + self.resets, dtype=np.uint8), 0.0, False)

    def step(self, action: np.ndarray) -> Step:
        self.t += 1
        self.log.append(("step", self.resets, self.t))
        reward = self.env_id * 1000 + self.resets * 10 + float(action[0])
        return Step(np.full((1,), self.env_id * 100 + self.resets, dtype=np.uint8), reward,
                    self.t >= self.lengths[self.resets])  # fmt: skip

    def step_async(self, action: np.ndarray) -> None:
        assert self.pending is None, "step_async twice"
        self.pending = action

    def step_wait(self) -> Step:
        assert self.pending is not None, "step_wait without step_async"
        action, self.pending = self.pending, None
        return ScriptedEnv.step(self, action)


class ScriptedAsyncEnv(ScriptedEnv):
    """The same, with only AsyncEnv's split step; stepping twice or waiting without a step is an error."""

    def step(self, action: np.ndarray) -> Step:  # pragma: no cover - run_episodes must use the split step
        raise AssertionError("an async env must be stepped with step_async / step_wait")


def act(obs: np.ndarray) -> np.ndarray:
    return np.array([obs[0] % 7], dtype=np.float32)  # depends on which env and episode: checks the routing


def sequential(env_lengths: list[list[int]], episodes: int, action_repeat: int, max_frames=None):
    """Brute force: episode k on env k % K, each env's episodes played one after another, in order."""
    envs = [ScriptedEnv(i, lengths) for i, lengths in enumerate(env_lengths)]
    out = {}
    for k in range(episodes):
        env = envs[k % len(envs)]
        ts, ret, frames = env.reset(), 0.0, 0
        while True:
            ts = env.step(act(ts.observation))
            ret, frames = ret + ts.reward, frames + action_repeat
            if ts.last or (max_frames is not None and frames >= max_frames):
                break
        out[k] = EpisodeResult(ret, frames)
    return [out[k] for k in range(episodes)]


@pytest.mark.parametrize("kind", [ScriptedEnv, ScriptedAsyncEnv])
@pytest.mark.parametrize("num_envs,episodes", [(1, 3), (2, 5), (3, 3), (4, 2), (3, 7)])
def test_matches_one_after_another(kind, num_envs, episodes):
    lengths = [[3 + (i + 2 * n) % 4 for n in range(4)] for i in range(num_envs)]  # unequal episode lengths
    envs = [kind(i, lengths[i]) for i in range(num_envs)]
    got = run_episodes(envs, act, episodes, action_repeat=2)
    assert got == sequential(lengths, episodes, 2)
    assert [env.resets + 1 for env in envs] == resets_per_env(episodes, num_envs)


def test_max_episode_frames_and_on_step_calls():
    envs = [ScriptedAsyncEnv(0, [50] * 3), ScriptedEnv(1, [50] * 3)]  # mixed kinds work together
    calls = []
    got = run_episodes(envs, act, 3, action_repeat=4, max_episode_frames=12,
                       on_step=lambda ep, env, r, ret, frames: calls.append((ep, env.env_id, frames, ret)))  # fmt: skip
    assert [r.frames for r in got] == [12, 12, 12]  # 3 agent steps x action repeat 4
    assert got == sequential([[50] * 3, [50] * 3], 3, 4, max_frames=12)
    for ep in range(3):
        mine = [c for c in calls if c[0] == ep]
        assert [c[2] for c in mine] == [0, 4, 8, 12]  # the reset, then every step, in order
        assert {c[1] for c in mine} == {ep % 2}
        assert mine[-1][3] == pytest.approx(got[ep].episode_return)


def test_resets_per_env():
    assert resets_per_env(10, 3) == [4, 3, 3]
    assert resets_per_env(2, 4) == [1, 1, 0, 0]
    assert sum(resets_per_env(7, 8)) == 7


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        run_episodes([ScriptedEnv(0, [3])], act, 0, 1)
    with pytest.raises(ValueError, match="no environments"):
        run_episodes([], act, 1, 1)


# ------------------------------------------------------------------------------------------------------- progress
class TimedEnv(ScriptedEnv):
    """A ScriptedEnv whose every step takes ``dt`` seconds of the shared fake ``clock`` (a one-element list)."""

    def __init__(self, env_id: int, lengths: list[int], clock: list[float], dt: float):
        super().__init__(env_id, lengths)
        self.clock, self.dt = clock, dt

    def step_wait(self) -> Step:
        self.clock[0] += self.dt
        return super().step_wait()


def _hms(text: str) -> float:
    h, m, s = (int(v) for v in text.split(":"))
    return 3600 * h + 60 * m + s


@pytest.mark.parametrize("tty", [False, True], ids=["lines", "bar"])
@pytest.mark.parametrize("num_envs", [1, 2])
def test_progress_reports_every_episode_once_in_order_with_the_true_eta(tty, num_envs):
    """6 episodes of 5 agent steps (10 frames) on K envs, 0.5 s per env step (the steps of one round do not overlap
    here): 4 frames/s. The ETA when an episode ends must be the true time left, total time - time so far."""
    clock, episodes, repeat, dt = [0.0], 6, 2, 0.5
    lengths = [[5] * episodes for _ in range(num_envs)]
    envs = [TimedEnv(i, lengths[i], clock, dt) for i in range(num_envs)]
    total_time = episodes * 5 * dt  # every env step is one dt; lockstep does not overlap steps in this process
    lines, out, seen = [], io.StringIO(), []
    with EvalProgress("eval | frame 0", write=lines.append, file=out, tty=tty, clock=lambda: clock[0],
                      min_interval=0.0) as progress:
        def spy(p: Progress) -> None:
            seen.append(p)
            progress(p)

        got = run_episodes(envs, act, episodes, repeat, progress=spy)
    assert got == sequential(lengths, episodes, repeat)
    # the callback: once after the resets, then once per lockstep round; every episode finishes exactly once
    assert seen[0] == Progress(episodes, 0, 0) and len(seen) == 1 + episodes // num_envs * 5
    finished = [k for p in seen for k, _ in p.finished]
    assert sorted(finished) == list(range(episodes)) and seen[-1].done == episodes
    assert seen[-1].frames == episodes * 10
    if not tty:
        assert out.getvalue() == ""
        assert len(lines) == episodes
        for d, line in enumerate(lines, 1):
            m = re.fullmatch(r"eval \| frame 0 \| episode (\d+)/6 \| return (\S+) \| (\d+) frames/s \| ETA (\S+)", line)
            assert m, line
            assert int(m[1]) == d  # in order, each once
            assert float(m[2]) == pytest.approx(got[d - 1].episode_return, abs=0.05)
            assert int(m[3]) == 4  # frames/s: 2 frames per 0.5 s step, whatever K
            assert _hms(m[4]) == round(total_time - clock_at(d, num_envs, dt)), line
    else:
        assert lines == []
        states = [s for s in out.getvalue().split("\r") if "episodes" in s]
        done = [int(re.search(r"(\d+)/6 episodes", s)[1]) for s in states]
        assert done == sorted(done) and done[0] == 0 and done[-1] == episodes  # never backwards, 0 to all
        assert sorted(set(done)) == list(range(0, episodes + 1, num_envs))  # every step of the count is shown
        for s, d in zip(states, done):
            if d:
                eta = re.search(r"(\d+) frames/s, ETA (\S+)\]", s)
                assert eta and int(eta[1]) == 4, s
        first_of = {}  # the bar drawn when the count reached d
        for s, d in zip(states, done):
            first_of.setdefault(d, s)
        for d in range(num_envs, episodes + 1, num_envs):
            assert _hms(re.search(r"ETA (\S+)\]", first_of[d])[1]) == round(total_time - clock_at(d, num_envs, dt))
        assert "ETA ?" in states[0]
        assert out.getvalue().endswith("\r")  # the bar is cleared on close (leave=False)


def clock_at(done: int, num_envs: int, dt: float) -> float:
    """The fake time when the ``done``-th episode ends: episodes end K at a time, after 5 rounds of K steps each."""
    rounds = -(-done // num_envs) * 5
    return rounds * num_envs * dt


def test_progress_eta_is_unknown_before_the_first_episode_and_never_negative():
    clock = [0.0]
    p = EvalProgress("x", write=lambda s: None, tty=False, clock=lambda: clock[0])
    assert p.rate_and_eta(Progress(3, 0, 0)) == (0.0, None)
    clock[0] = 2.0
    assert p.rate_and_eta(Progress(3, 0, 40)) == (20.0, None)
    p(Progress(3, 1, 40, ((0, EpisodeResult(1.0, 10)),)))  # a short first episode: 30 frames expected, 40 played
    assert p.rate_and_eta(Progress(3, 1, 40)) == (20.0, 0.0)
