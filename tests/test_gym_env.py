"""Gymnasium envs through drq.envs.gym_pixels and drq.envs.gym_ids: actions onto the Box, pixel sources, seeds, the
video renderer, one-line errors for what cannot be trained on, and the task=gym config.

References: the bounds formula typed here, gymnasium's own env (its render, its reset with a seed), the scripted envs
of tests/gym_scripted.py whose pictures encode what they received.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_debug

from drq.config import schema
from drq.config.errors import ConfigError, check_overrides, exit_on_bad_overrides
from drq.envs import gym_ids, gym_probe
from drq.envs.gym_ids import GymIdError
from drq.envs.gym_pixels import GymEnvError, GymPixelEnv, action_space_problem

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = "gym_scripted:ScriptedEnds"
WHY = "DrQ-v2 and SAC need a bounded continuous action"


# ------------------------------------------------------------------------------------------------------ actions
def test_actions_in_minus_one_one_land_on_the_box_bounds():
    from gym_scripted import ACTION_HIGH, ACTION_LOW, action_code

    env = GymPixelEnv(SCRIPTED, pixels="observation", size=16, action_repeat=1)
    assert env.action_low.dtype == np.float64 and (env.action_low[0], env.action_high[0]) == (ACTION_LOW, ACTION_HIGH)
    env.reset()
    for a in (-1.0, 1.0, 0.0, 0.37, -0.81):
        ts = env.step(np.array([a], np.float32))
        assert ts.frame[2, 0, 0] == action_code(ACTION_LOW + (a + 1) / 2 * (ACTION_HIGH - ACTION_LOW)), a
        assert ts.action[0] == np.float32(a)  # the replay and the logs keep the agent's action
        if ts.last:
            env.reset()
    mapped = env._env_action(np.array([-1.0], np.float32)), env._env_action(np.array([1.0], np.float32))
    assert (mapped[0][0], mapped[1][0]) == (np.float32(ACTION_LOW), np.float32(ACTION_HIGH))  # exactly the bounds
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        env.step(np.array([1.5], np.float32))
    env.close()


@pytest.mark.parametrize("space", ["Discrete(3)", "MultiDiscrete([2, 3])", "MultiBinary(2)",
                                   "Box(-np.inf, np.inf, (2,), np.float32)", "Box(-1, 1, (2, 2), np.float32)",
                                   "Box(-1, 1, (2,), np.int64)", "Box(1, 1, (2,), np.float32)",
                                   "Tuple([Discrete(2), Box(-1, 1, (1,))])"])  # fmt: skip
def test_every_other_action_space_is_refused_in_one_line(space):
    from gymnasium.spaces import Box, Discrete, MultiBinary, MultiDiscrete, Tuple  # noqa: F401 -- eval reads them

    problem = action_space_problem(eval(space))
    assert problem is not None and WHY in problem and "\n" not in problem
    assert action_space_problem(Box(-2.0, 3.0, (4,), np.float32)) is None


def test_a_discrete_env_is_refused_before_it_is_stepped():
    with pytest.raises(GymEnvError) as error:
        GymPixelEnv("gym_scripted:DiscreteActions", pixels="observation", size=16)
    assert str(error.value).startswith("gym.id=gym_scripted:DiscreteActions: its action space is Discrete(3); " + WHY)


# ------------------------------------------------------------------------------------------------------ pixels
def test_a_dict_observation_key_is_the_picture_and_a_wrong_key_names_the_keys():
    env = GymPixelEnv("gym_scripted:DictPictures", pixels="camera", size=16, action_repeat=2)
    env.reset()
    ts = env.step(np.zeros(1, np.float32))
    assert tuple(ts.frame[:2, 0, 0]) == (0, 1) and ts.last and ts.discount == 0.0  # the script terminates at frame 1
    env.close()
    with pytest.raises(GymEnvError, match=r"gym.pixels=camra is not a key of its Dict observation \(keys: camera, "
                                          r"state; closest: camera\)"):  # fmt: skip
        GymPixelEnv("gym_scripted:DictPictures", pixels="camra", size=16)


@pytest.mark.parametrize("env_id, pixels, words", [
    ("gym_scripted:FloatPictures", "observation", "not a uint8 (H, W, 3) Box"),
    (SCRIPTED, "render", "it has no rgb_array render mode, and gym.pixels=render; its observation holds an image: "
                         "gym.pixels=observation"),
])  # fmt: skip
def test_an_env_without_a_picture_is_one_line(env_id, pixels, words):
    with pytest.raises(GymEnvError) as error:
        GymPixelEnv(env_id, pixels=pixels, size=16)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_picture_of_another_size_is_area_resized():
    env = GymPixelEnv("examples.point_reach:PointReach", size=42, kwargs={"size": 84})
    ts = env.reset()
    picture = env._env.render().astype(np.float64)  # the env's own 84 x 84 render: 2 x 2 block means
    blocks = picture.reshape(42, 2, 42, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    assert ts.observation.shape == (9, 42, 42) and np.abs(ts.frame - blocks).max() <= 0.5 + 1e-9
    assert env.render(256).shape == (256, 256, 3)  # the video: the env's picture resized
    env.close()


# ------------------------------------------------------------------------------------------------------- seeds
def test_resets_are_gymnasiums_seeded_and_unseeded_ones():
    """reset(seed=s) is gymnasium's reset(seed=s) (the trainer seeds every episode: drq.run.seeds); reset() is
    gymnasium's convention: the first seeds the env's stream with the env's seed, later ones go on with it."""
    from examples.point_reach import PointReach

    env = GymPixelEnv("examples.point_reach:PointReach", seed=7, size=84)
    plain = PointReach(render_mode="rgb_array")
    for seed in (None, None, 11, None, 5, 5):
        frame = env.reset(seed=seed).frame
        plain.reset(seed=7 if seed is None and plain._np_random is None else seed)
        assert np.array_equal(frame, plain.render().transpose(2, 0, 1)), seed
    assert not np.array_equal(env.reset().frame, env.reset().frame)
    env.close()


# ------------------------------------------------------------------------------------------------- MuJoCo envs
def _gymnasium_render(env) -> np.ndarray:
    """gymnasium's own render of a MuJoCo env, its GL context made current first (several live in this process)."""
    env.unwrapped.mujoco_renderer._get_viewer("rgb_array").make_context_current()
    return env.render()


def _look_at_the_default_state(env) -> None:
    """The reference camera: gymnasium's free camera looking at the median geom position of the model's default
    state (qpos0), as the adapter pins it, instead of wherever the state is at the first render."""
    import mujoco

    model = env.unwrapped.model
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = env.unwrapped.mujoco_renderer
    renderer.default_cam_config = {**(renderer.default_cam_config or {}), "lookat": np.median(data.geom_xpos, axis=0)}


def test_a_mujoco_env_renders_the_agents_picture_directly_and_videos_apart():
    """InvertedPendulum-v5 is built at the agent's size (its frames are gymnasium's own render, unresized); a video
    renderer at 256 (a second renderer of the same model and camera) leaves the agent's frames as they were."""
    import gymnasium

    actions = np.random.default_rng(0).uniform(-1, 1, (12, 1)).astype(np.float32)
    plain = gymnasium.make("InvertedPendulum-v5", render_mode="rgb_array", width=64, height=64)
    _look_at_the_default_state(plain)
    plain.reset(seed=3)
    watched, unwatched = (GymPixelEnv("InvertedPendulum-v5", size=64, action_repeat=1) for _ in range(2))
    a, b = watched.reset(seed=3), unwatched.reset(seed=3)
    assert np.array_equal(a.frame, _gymnasium_render(plain).transpose(2, 0, 1))
    for action in actions:
        video = watched.render(256)
        assert video.shape == (256, 256, 3) and video.dtype == np.uint8 and video.std() > 5
        a, b = watched.step(action), unwatched.step(action)
        plain.step(3.0 * action)  # the Box is [-3, 3]
        assert np.array_equal(a.observation, b.observation) and a.reward == b.reward
        assert np.array_equal(a.frame, _gymnasium_render(plain).transpose(2, 0, 1))
        if a.last:
            break
    with pytest.raises(GymEnvError, match=r"camera 'nope' is not one of its 0 cameras \[\]"):
        watched.render_camera(96, "nope")
    assert watched.render_camera(96, -1).shape == (96, 96, 3)
    for env in (plain, watched, unwatched):
        env.close()


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "Reacher-v5"])
def test_the_picture_of_a_state_does_not_depend_on_what_the_env_did_before(env_id):
    """A worker that has played episodes and a fresh one (a resume, a restarted worker, another eval worker) see a
    state alike, with other GL contexts alive in the process. Without the pinned camera InvertedPendulum-v5's pictures
    differed by up to 43 levels (gymnasium aims the free camera at the first rendered state); without making the
    context current, Reacher-v5's by up to 172 (a render drew with another env's context)."""
    used = GymPixelEnv(env_id, size=48, action_repeat=4, seed=1)
    for episode in range(4):
        used.reset(seed=100 + episode)
        for _ in range(3):
            if used.step(np.ones(used.action_shape, np.float32)).last:
                break
    used.render(64)  # a video renderer, one GL context more
    fresh = GymPixelEnv(env_id, size=48, action_repeat=4, seed=1)
    fresh.reset(seed=7)
    other = GymPixelEnv("HalfCheetah-v5", size=48, seed=1)  # another model's GL context, current last
    other.reset(seed=0)
    assert np.array_equal(used.reset(seed=7).observation, fresh.reset(seed=7).observation)
    other.reset(seed=1)
    step = np.full(used.action_shape, 0.5, np.float32)
    assert np.array_equal(used.step(step).observation, fresh.step(step).observation)
    other.reset(seed=2)
    assert np.array_equal(used.render(64), fresh.render(64))
    for env in (used, fresh, other):
        env.close()


def test_an_unclosed_mujoco_env_exits_quietly():
    """A fresh interpreter is the point: the EGL display goes at exit. Before the exit hook this printed two EGL
    tracebacks ('Exception ignored in ... OffScreenViewer.__del__')."""
    script = textwrap.dedent("""
        import numpy as np
        from drq.envs.gym_pixels import GymPixelEnv
        env = GymPixelEnv("InvertedPendulum-v5", size=48)
        env.reset(); env.render(96); env.step(np.zeros(1, np.float32))
        print("done")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------------- names (ids)
@pytest.mark.parametrize("name, words", [
    ("InvertedPendulm-v5", "not a registered Gymnasium id; closest registered ids: InvertedPendulum-v5"),
    ("my_pkg.my_module:MyEnv", "no module named 'my_pkg' (looked up on sys.path and in the working directory"),
    ("gym_scripted:ScriptedEnd", "module gym_scripted has no attribute 'ScriptedEnd'; closest: ScriptedEnds"),
])  # fmt: skip
def test_a_name_that_builds_nothing_is_one_line(name, words):
    with pytest.raises(GymIdError) as error:
        gym_ids.resolve(name)
    assert str(error.value).startswith(f"gym.id={name}: {words}") and "\n" not in str(error.value)


def test_a_missing_package_extra_names_the_pip_command():
    pytest.importorskip("gymnasium")
    try:
        import Box2D  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Box2D is installed here")
    with pytest.raises(GymIdError, match=r'install it with: pip install "gymnasium\[box2d\]"$'):
        gym_ids.resolve("LunarLanderContinuous-v3")


def test_time_limits_and_records_come_from_the_registry():
    assert gym_ids.time_limit_frames("InvertedPendulum-v5") == 1000 and gym_ids.time_limit_frames("Reacher-v5") == 50
    assert gym_ids.time_limit_frames("examples.point_reach:PointReach") is None
    assert gym_ids.time_limit_frames("examples.point_reach:PointReach", {"max_episode_steps": 60}) == 60
    assert gym_ids.record("Reacher-v5") == {"id": "Reacher-v5", "registered": True, "max_episode_steps": 50,
                                            "entry_point": "gymnasium.envs.mujoco.reacher_v5:ReacherEnv"}  # fmt: skip
    assert gym_ids.record(SCRIPTED)["entry_point"] == SCRIPTED


# ------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, line", [
    (["task=gym"], "task_name=null: a DrQ-v2 task or a dm_control suite domain_task (with task=gym: gym.id); "
                   "task=gym needs gym.id"),
    (["gym.id=InvertedPendulum-v5"], "gym.id=InvertedPendulum-v5: given with task=gym (python train.py task=gym "
                                     "gym.id=InvertedPendulum-v5)"),
    (["task=gym", "gym.id=InvertedPendulum-v5", "camera_id=1"], "camera_id=1: null with task=gym; a gymnasium MuJoCo "
                                                                "env takes +gym.kwargs.camera_name=NAME"),
    (["task=gym", "gym.id=InvertedPendulum-v5", "fast_render=no_shadows"], "fast_render=no_shadows: false with "
                                                                           "task=gym"),
    (["task=gym", "gym.id=InvertedPendulum-v5", "gym.kwargs.camera_name=track"],
     "gym.kwargs.camera_name=track: add a keyword argument with a '+': +gym.kwargs.camera_name=track"),
    (["task=gym", "gym.id=Reacher-v5", "gym.kwargs={camera_id:-1,frame_skip:4}"],  # hydra: "Could not override"
     "gym.kwargs={camera_id:-1,frame_skip:4}: hydra adds keyword arguments only with a '+': "
     "'+gym.kwargs={camera_id:-1,frame_skip:4}'"),
    (["task=gym", "gym.id=InvertedPendulm-v5"], "gym.id=InvertedPendulm-v5: null, a Gymnasium id or "
                                                "module.path:ClassName; not a registered Gymnasium id; closest "
                                                "registered ids: InvertedPendulum-v5"),
    (["task=gym", "gym.id=InvertedPendulum-v5", "gym.pixels="], "gym.pixels='': render, observation or a key"),
])  # fmt: skip
def test_bad_gym_configs_are_one_line(overrides, line):
    with pytest.raises(ConfigError) as error:
        check_overrides(overrides)
    assert str(error.value).startswith(line) and "\n" not in str(error.value), str(error.value)


def test_task_gym_names_the_run_after_the_env_and_passes_kwargs():
    several = schema.load(compose_debug("task=gym", "gym.id=Reacher-v5", "+gym.kwargs={camera_id:-1,frame_skip:4}",
                                        base=("preset=debug",)))  # fmt: skip
    assert several.gym.kwargs == {"camera_id": -1, "frame_skip": 4}  # the form the lines above suggest
    cfg = schema.load(compose_debug("task=gym", "gym.id=InvertedPendulum-v5", "+gym.kwargs.camera_id=-1",
                                    base=("preset=debug",)))  # fmt: skip
    assert (cfg.task_name, cfg.gym.kwargs, cfg.fast_render) == ("InvertedPendulum-v5", {"camera_id": -1}, False)
    from drq.run.build import env_factory

    factory = env_factory(cfg, seed=9)
    assert factory.func is GymPixelEnv and factory.keywords["kwargs"] == {"camera_id": -1}
    assert factory.keywords["seed"] == 9 and factory.keywords["size"] == cfg.image_size


def test_the_memory_estimate_and_nstep_read_the_envs_time_limit():
    from drq.config import footprint

    values = schema.values(compose_debug("task=gym", "gym.id=Reacher-v5", "max_episode_frames=null", "nstep=26",
                                         base=("preset=debug",)))  # fmt: skip
    assert footprint.episode_frames(values) == (50, "Reacher-v5's time limit of 50 frames", True)
    (line,) = schema.check(compose_debug("task=gym", "gym.id=Reacher-v5", "max_episode_frames=null", "nstep=7",
                                         base=("preset=debug",)))  # fmt: skip
    assert line.startswith("nstep=7: at most the episode's 6 agent steps = Reacher-v5's time limit of 50 frames / "
                           "action_repeat=8")
    assert footprint.video_frames(values) == -(-50 // 8) + 1 and footprint.replay_adds(values) == 250 + 40 + 1


def _exit_line(argv: list[str], capsys) -> tuple[int, str]:
    from drq.run.env_probe import refuse_before_hydra

    with pytest.raises(SystemExit) as exit:
        exit_on_bad_overrides(argv, also=[refuse_before_hydra])
    return exit.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, line", [
    (["task=gym", "gym.id=CartPole-v1"], "drq: gym.id=CartPole-v1: its action space is Discrete(2); " + WHY),
    (["task=gym", "gym.id=InvertedPendulm-v5"], "drq: gym.id=InvertedPendulm-v5: null, a Gymnasium id or "
                                                "module.path:ClassName; not a registered Gymnasium id; closest "
                                                "registered ids: InvertedPendulum-v5, InvertedPendulum-v4"),
    (["task=gym", "gym.id=my_pkg.my_module:MyEnv"], "drq: gym.id=my_pkg.my_module:MyEnv: null, a Gymnasium id or "
                                                    "module.path:ClassName; no module named 'my_pkg'"),
])  # fmt: skip
def test_train_py_refuses_bad_envs_in_one_line_before_the_run_dir(argv, line, capsys, tmp_path):
    code, err = _exit_line([*argv, f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and err.startswith(line) and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_camera_that_sees_almost_nothing_is_one_warning(capsys):
    from drq.run.env_probe import refuse_before_hydra

    refuse_before_hydra(["task=gym", "gym.id=InvertedDoublePendulum-v5"])  # a pendulum a few pixels tall at 84 x 84
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("drq: warning: gym.id=InvertedDoublePendulum-v5: only 0.") and "+gym.kwargs.camera_name" \
        in line  # fmt: skip
    blank, dot = np.zeros((3, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8)
    dot[:, 3:5, 3:5] = 200  # 4 of 64 pixels
    assert gym_probe.visible_fraction([blank, dot]) == pytest.approx(2 / 64)
    assert gym_probe.camera_warning("X", [blank, blank]) is not None and gym_probe.camera_warning("X", [dot]) is None
