"""drq.eval_episodes: episodes on several environments in lockstep, checked against playing each environment's
episodes one after another (a brute-force loop), with scripted environments whose rewards encode who stepped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from drq.eval_episodes import EpisodeResult, resets_per_env, run_episodes


@dataclass
class Step:
    observation: np.ndarray
    reward: float
    last: bool


class ScriptedEnv:
    """Episode ``n`` (its n-th reset) lasts ``lengths[n]`` steps; the reward of step t is ``env_id * 1000 + n * 10 +
    action`` so that a result says which env, which of its episodes and which action produced it. Like
    ``drq.env.PixelEnv``, ``step_async`` stores the action and ``step_wait`` runs it."""

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
