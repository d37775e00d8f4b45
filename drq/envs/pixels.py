"""DeepMind Control from pixels: action repeat, frame stack, :class:`drq.envs.timestep.TimeStep`s.

Clock: one call to :meth:`PixelEnv.step` is one *agent step* = ``action_repeat`` *frames* (physics control steps);
rewards are summed over those frames and the picture is rendered once, after the last of them.

Example::

    env = make_env("walker_walk", frame_stack=3, action_repeat=2, seed=1, size=84)
    ts = env.reset()                       # ts.observation: uint8 (9, 84, 84), first frame repeated 3 times
    ts = env.step(np.zeros(env.action_shape, np.float32))
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from drq.envs import FAST_RENDER_CHOICES
from drq.envs import rendering
from drq.envs import tasks
from drq.envs.frames import FrameStack
from drq.envs.split_step import SplitStepEnv
from drq.envs.timestep import TimeStep, episode_over  # noqa: F401 -- re-exported: the names users import from here

FastRender = Union[bool, str, None]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _seed(value: Any) -> int:
    # numpy 2's RandomState accepts only integers in [0, 2**32); cast numpy ints, reject the rest here.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def _fast_render_mode(value: FastRender) -> str | None:
    """Normalise ``fast_render`` to None, 'no_msaa' or 'no_shadows'."""
    if value is None or value is False:
        return None
    if value is True:
        return "no_msaa"
    if isinstance(value, str) and value in ("no_msaa", "no_shadows"):
        return value
    raise ValueError(f"fast_render must be one of {FAST_RENDER_CHOICES}, got {value!r}")


class PixelEnv(SplitStepEnv):
    """A dm_control task seen through one camera (``make_env`` is this class: the name drqv2 users know).

    task: a name from :mod:`drq.envs.tasks`; frame_stack: k, frames per observation; action_repeat: frames per agent
    step; size: H = W in pixels; camera_id: None picks the domain's camera (quadruped 2, else 0); fast_render: False
    (full quality) | 'no_msaa' (or True) | 'no_shadows' (MSAA and shadows off).
    """

    def __init__(
        self,
        task: str = "walker_walk",
        frame_stack: int = 3,
        action_repeat: int = 2,
        seed: int = 1,
        size: int = 84,
        camera_id: int | str | None = None,
        fast_render: FastRender = False,
    ) -> None:
        self.task_name = task
        self.domain, self.task = tasks.resolve_task(task)
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.action_repeat = _positive_int("action_repeat", action_repeat)
        self.size = _positive_int("size", size)
        self.seed = _seed(seed)
        self.fast_render = _fast_render_mode(fast_render)
        self.camera_id = tasks.default_camera(self.domain) if camera_id is None else camera_id
        self.backend = rendering.setup_rendering()
        self._env = self._load()

        spec = self._env.action_spec()  # the task's own bounds: the agent's [-1, 1] is mapped onto them
        self._set_action_space(spec.minimum, spec.maximum, spec.shape, spec.dtype)
        self.observation_shape: tuple[int, int, int] = (3 * self.frame_stack, self.size, self.size)
        # Shadows are turned off per render (a scene flag: no shadow-map pass); MSAA in the model before the first
        # render, because MuJoCo sizes the multisampled framebuffer when it creates the rendering context.
        self._render_flags = {"shadow": False} if self.fast_render == "no_shadows" else None

        self._frames = FrameStack(self.frame_stack)

    def _load(self) -> Any:
        if self.domain == tasks.MANIPULATION_DOMAIN:
            from dm_control import manipulation

            return manipulation.load(f"{self.task}_features", seed=self.seed)
        from dm_control import suite

        return suite.load(self.domain, self.task, task_kwargs={"random": self.seed})

    @property
    def physics(self) -> Any:
        """The dm_control physics of the current episode (manipulation tasks build a new one at every reset)."""
        return self._env.physics

    def _apply_render_quality(self) -> None:
        if self.fast_render is not None:
            self.physics.model.vis.quality.offsamples = 0

    def render(self, size: int = 256) -> np.ndarray:
        """The task's camera view, uint8 (size, size, 3) (channels-last, for videos), with this env's quality."""
        return self.physics.render(size, size, camera_id=self.camera_id, render_flag_overrides=self._render_flags)

    def render_camera(self, size: int, camera: int | str) -> np.ndarray:
        """Camera ``camera`` (id or name) of the task at ``size``, uint8 (size, size, 3) (``drq.evaluate --camera``)."""
        return self.physics.render(size, size, camera_id=camera)

    def _render_frame(self) -> np.ndarray:
        return np.ascontiguousarray(self.render(self.size).transpose(2, 0, 1))

    def _task_random(self) -> np.random.RandomState:
        """The RandomState the task draws its initial states (and any noise) from."""
        if self.domain == tasks.MANIPULATION_DOMAIN:
            return self._env.random_state  # composer
        return self._env.task.random  # suite

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode; the first frame fills all k slots of the stack.

        ``seed``: an integer in [0, 2**32) that re-seeds the task's RandomState first, so the episode starts from the
        same initial state as the first episode of an env built with that seed, whatever this env played before
        (evaluation episodes: :func:`drq.run.evaluation.episode_seeds`). ``None``: go on with the env's own stream (the
        training env, seeded once at construction)."""
        if seed is not None:
            self._task_random().seed(_seed(seed))
        self._env.reset()
        self._apply_render_quality()
        observation = self._frames.reset(self._render_frame())
        self._pending_action = None
        self._needs_reset = False
        return TimeStep(
            observation=observation,
            action=np.zeros(self.action_shape, np.float32),
            reward=0.0,
            discount=1.0,
            first=True,
            last=False,
        )

    def _run(self, action: np.ndarray, env_action: np.ndarray) -> TimeStep:
        """``env_action`` for ``action_repeat`` frames (fewer if the episode ends), then one render."""
        reward, discount, last = 0.0, 1.0, False
        for _ in range(self.action_repeat):
            dm_step = self._env.step(env_action)
            reward += float(dm_step.reward or 0.0)
            discount *= float(1.0 if dm_step.discount is None else dm_step.discount)
            if dm_step.last():
                last = True
                break
        self._needs_reset = last
        observation = self._frames.push(self._render_frame())
        return TimeStep(
            observation=observation, action=action, reward=reward, discount=discount, first=False, last=last
        )

    def close(self) -> None:
        """Free the dm_control environment (and its rendering contexts)."""
        close = getattr(self._env, "close", None)
        if close is not None:
            close()


make_env = PixelEnv  # the factory name drqv2 users know: make_env(task, frame_stack=3, action_repeat=2, ...)
