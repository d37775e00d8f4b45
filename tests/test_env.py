"""drq.envs.pixels checked against bare dm_control environments stepped and rendered by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dm_env import specs
from dm_env import TimeStep as DmTimeStep
from dm_env import StepType

from drq.envs import rendering
from drq.envs.pixels import PixelEnv, TimeStep, make_env

rendering.setup_rendering()
from dm_control import manipulation, suite  # noqa: E402  (after the backend is chosen)


def chw(image: np.ndarray) -> np.ndarray:
    return image.transpose(2, 0, 1)


def random_actions(n: int, action_dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, action_dim)).astype(np.float32)


def test_reward_is_sum_over_action_repeat_like_bare_env():
    env = make_env("cartpole_swingup", frame_stack=2, action_repeat=3, seed=7, size=16, fast_render="no_shadows")
    bare = suite.load("cartpole", "swingup", task_kwargs={"random": 7})
    env.reset()
    bare.reset()
    for action in random_actions(20, 1):
        ts = env.step(action)
        sub_rewards = [bare.step(action.astype(np.float64)).reward for _ in range(3)]
        assert ts.reward == pytest.approx(sum(sub_rewards), rel=1e-12, abs=1e-12)
        assert isinstance(ts.reward, float) and ts.discount == 1.0
        assert ts.action.dtype == np.float32 and np.array_equal(ts.action, action)
    assert np.array_equal(env.physics.data.qpos, bare.physics.data.qpos)


def test_frame_stack_after_reset_and_shift():
    k, size = 3, 24
    env = make_env("cartpole_swingup", frame_stack=k, action_repeat=2, seed=3, size=size)
    ts = env.reset()
    assert isinstance(ts, TimeStep) and ts.first and not ts.last and ts.reward == 0.0 and ts.discount == 1.0
    assert np.array_equal(ts.action, np.zeros(1, np.float32))
    first = chw(env.physics.render(size, size, camera_id=0))
    assert np.array_equal(ts.observation, np.concatenate([first] * k))
    frames = [first] * k
    for action in np.ones((5, 1), np.float32):  # push the cart one way: every frame differs
        ts = env.step(action)
        frames.append(chw(env.physics.render(size, size, camera_id=0)))
        assert not ts.first
        assert np.array_equal(ts.observation, np.concatenate(frames[-k:]))  # oldest first, newest last
        assert np.array_equal(ts.frame, frames[-1])
        assert not np.array_equal(frames[-1], frames[-2])


@pytest.mark.parametrize("frame_stack,size", [(3, 84), (2, 64)])
def test_observation_dtype_and_shape(frame_stack, size):
    env = make_env("walker_walk", frame_stack=frame_stack, size=size, fast_render="no_shadows")
    assert env.observation_shape == (3 * frame_stack, size, size) and env.action_shape == (6,)
    for ts in (env.reset(), env.step(np.zeros(6, np.float32))):
        assert ts.observation.dtype == np.uint8 and ts.observation.shape == (3 * frame_stack, size, size)
        assert ts.observation.flags["C_CONTIGUOUS"]
    video = env.render(256)
    assert video.shape == (256, 256, 3) and video.dtype == np.uint8


def test_quadruped_uses_camera_2_and_rescales_actions():
    env = make_env("quadruped_walk", size=32, fast_render="no_shadows")
    bare = suite.load("quadruped", "walk")
    assert env.camera_id == 2
    ts = env.reset()
    camera2 = chw(env.physics.render(32, 32, camera_id=2, render_flag_overrides={"shadow": False}))
    camera0 = chw(env.physics.render(32, 32, camera_id=0, render_flag_overrides={"shadow": False}))
    assert np.array_equal(ts.frame, camera2) and not np.array_equal(ts.frame, camera0)
    spec = bare.action_spec()
    assert not np.allclose(spec.minimum, -1.0)  # quadruped's bounds are not [-1, 1]: the rescale is exercised
    env.step(np.ones(12, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, spec.maximum)
    env.step(-np.ones(12, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, spec.minimum)
    env.step(np.zeros(12, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, (spec.minimum + spec.maximum) / 2)


def test_episode_ends_after_1000_frames_with_partial_last_step():
    action_repeat = 7  # 1000 = 142 * 7 + 6: the last agent step runs only 6 frames
    env = make_env("cartpole_balance", action_repeat=action_repeat, seed=2, size=8, fast_render="no_shadows")
    bare = suite.load("cartpole", "balance", task_kwargs={"random": 2})
    env.reset()
    bare.reset()
    steps, last_reward = 0, None
    while True:
        ts = env.step(np.zeros(1, np.float32))
        steps += 1
        sub = []
        for _ in range(action_repeat):
            bare_ts = bare.step(np.zeros(1))
            sub.append(bare_ts.reward)
            if bare_ts.last():
                break
        assert ts.reward == pytest.approx(sum(sub))
        if ts.last:
            last_reward = sum(sub)
            break
    assert steps == 143 and len(sub) == 6 and ts.reward == pytest.approx(last_reward)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))
    assert env.reset().first


def test_reach_duplo_matches_vision_variant():
    env = make_env("reach_duplo", size=84, seed=5, fast_render=False)
    vision = manipulation.load("reach_duplo_vision", seed=5)
    ts = env.reset()
    assert np.array_equal(ts.frame, chw(vision.reset().observation["front_close"][0]))
    action = np.full(9, 0.5, np.float32)
    spec = vision.action_spec()
    ts = env.step(action)
    for _ in range(2):
        vision_ts = vision.step(spec.minimum + (action + 1) / 2 * (spec.maximum - spec.minimum))
    assert np.array_equal(ts.frame, chw(vision_ts.observation["front_close"][0]))


def test_fast_render_settings_change_pixels_a_little():
    frames = {}
    for setting in (False, "no_msaa", "no_shadows"):
        env = make_env("walker_walk", seed=1, size=64, fast_render=setting)
        env.reset()
        frames[setting] = env.step(np.full(6, 0.3, np.float32)).frame.astype(np.int16)
        if setting:
            assert env.physics.model.vis.quality.offsamples == 0
    assert make_env("walker_walk", fast_render=True).fast_render == "no_msaa"
    msaa_diff = np.abs(frames[False] - frames["no_msaa"]).mean()
    shadow_diff = np.abs(frames["no_msaa"] - frames["no_shadows"]).mean()
    assert 0 < msaa_diff < 5 and 0 < shadow_diff < 20


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"fast_render": "fast"}, "no_shadows"),
        ({"fast_render": 1}, "fast_render"),
        ({"frame_stack": 0}, "frame_stack"),
        ({"action_repeat": 1.5}, "action_repeat"),
        ({"seed": -1}, "seed"),
        ({"task": "walker_wlak"}, "walker_walk"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        make_env(**{"task": "cartpole_balance", **kwargs})


def test_bad_actions():
    env = make_env("walker_walk", size=8, fast_render="no_shadows")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6, np.float32))
    env.reset()
    with pytest.raises(ValueError, match=r"\(6,\).*\(3,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        env.step(np.full(6, 2.0))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(6, np.nan))
    ts = env.step(np.full(6, 1.0 + 1e-7, np.float64))  # rounding noise is clipped, not an error
    assert ts.action.dtype == np.float32 and ts.action.max() == 1.0


class StepCountingEnv:
    """A fake dm_control env: frame t has every pixel = t, sub-step t has reward 2**t and discount DISCOUNTS[t]."""

    DISCOUNTS = (1.0, 0.5, 1.0, 0.25, 1.0, 1.0, 1.0, 0.0)  # episode ends after 8 sub-steps (the last one terminal)

    def __init__(self):
        self.t = 0
        self.physics = self

        class Quality:
            offsamples = 4

        self.model = type("Model", (), {"vis": type("Vis", (), {"quality": Quality()})()})()

    def action_spec(self):
        return specs.BoundedArray((2,), np.float64, -1.0, 1.0)

    def reset(self):
        self.t = 0
        return DmTimeStep(StepType.FIRST, None, None, {})

    def step(self, action):
        self.t += 1
        last = self.t == len(self.DISCOUNTS)
        return DmTimeStep(StepType.LAST if last else StepType.MID, 2.0**self.t, self.DISCOUNTS[self.t - 1], {})

    def render(self, height, width, camera_id=0, render_flag_overrides=None):
        return np.full((height, width, 3), self.t, np.uint8)


def test_stack_reward_discount_against_step_encoding_fake(monkeypatch):
    monkeypatch.setattr(PixelEnv, "_load", lambda self: StepCountingEnv())
    env = make_env("cartpole_balance", frame_stack=3, action_repeat=3, size=4)
    ts = env.reset()
    assert ts.observation[:, 0, 0].tolist() == [0] * 9
    ts = env.step(np.zeros(2, np.float32))  # sub-steps 1, 2, 3
    assert ts.observation[::3, 0, 0].tolist() == [0, 0, 3]
    assert ts.reward == 2 + 4 + 8 and ts.discount == 0.5 and not ts.last
    ts = env.step(np.zeros(2, np.float32))  # sub-steps 4, 5, 6
    assert ts.observation[::3, 0, 0].tolist() == [0, 3, 6]
    assert ts.reward == 16 + 32 + 64 and ts.discount == 0.25 and not ts.last
    ts = env.step(np.zeros(2, np.float32))  # sub-steps 7, 8: the episode ends after two of three
    assert ts.observation[::3, 0, 0].tolist() == [3, 6, 8]
    assert ts.reward == 128 + 256 and ts.discount == 0.0 and ts.last
