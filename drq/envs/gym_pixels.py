"""Any Gymnasium environment from pixels: action repeat, frame stack, exact episode ends, :class:`TimeStep`s.

Clock: one call to :meth:`GymPixelEnv.step` is one *agent step* = ``action_repeat`` *frames*, a frame being one
``env.step`` of the Gymnasium env (a MuJoCo env's own ``frame_skip`` physics steps happen inside it); rewards are
summed over those frames and the picture is taken once, after the last of them.

Example::

    env = GymPixelEnv("InvertedPendulum-v5", frame_stack=3, action_repeat=2, seed=1, size=84)
    ts = env.reset()                       # ts.observation: uint8 (9, 84, 84)
    ts = env.step(np.zeros(env.action_shape, np.float32))

What it takes from the env, and what it does with it:

- **Pixels** (``pixels``): ``'render'`` (default): ``env.render()`` with ``render_mode='rgb_array'`` (gymnasium's MuJoCo
  envs are built with ``width = height = size``, so they render the agent's picture directly); ``'observation'``: the
  observation is the image; any other value: the key of a ``Dict`` observation holding the image (its other keys are
  ignored: the agent sees pixels only). The image must be uint8 ``(H, W, 3)``; :func:`drq.envs.frames.to_frame`
  resizes it to ``size`` (OpenCV area interpolation) and :class:`drq.envs.frames.FrameStack` stacks ``frame_stack``.
- **Actions**: the env's ``Box`` of shape ``(A,)`` with finite bounds; the agent acts in [-1, 1], mapped onto
  ``[action_low, action_high]`` in float64 and cast to the Box's dtype. Any other action space is refused in one line
  (:class:`GymEnvError`): DrQ-v2's and SAC's tanh policies give a bounded continuous action.
- **Episode ends**: ``terminated`` (no future) gives ``discount = 0.0, last = True``: the replay never bootstraps
  from that state; ``truncated`` (a time limit, ``TimeLimit``'s or the env's own) gives ``discount = 1.0, last =
  True``: it bootstraps. Either ends the agent step at that frame, with the rewards up to it (fewer than
  ``action_repeat`` frames). The trainer's ``max_episode_frames`` is a truncation too (:func:`episode_over`).
- **Seeds**: ``reset(seed=s)`` is ``env.reset(seed=s)``: the trainer seeds every episode, training episode ``k`` from
  ``(seed, k)`` and evaluation episode ``j`` at frame ``F`` from ``(seed, F, j)`` (:mod:`drq.run.seeds`), so a resume or
  a restarted worker replays it exactly, whatever the env draws from ``self.np_random`` while it steps. ``reset()``
  without a seed is gymnasium's convention, as the DMC env's: the first one seeds with ``seed``, later ones go on with
  the env's own stream.
- **Videos**: :meth:`render` ``(size)`` is the env's own view at ``size``: for a MuJoCo env a second renderer of the
  same model and camera at that size (the agent's pictures are untouched), for other envs ``env.render()`` (or the
  observation's image) resized.
"""

from __future__ import annotations

import atexit
import difflib
import os
import weakref
from typing import Any, Mapping

import numpy as np

from drq.envs import gym_ids
from drq.envs.frames import FrameStack, picture_problem, to_frame
from drq.envs.split_step import SplitStepEnv
from drq.envs.timestep import TimeStep

PIXEL_SOURCES = ("render", "observation")  # or the name of a key of a Dict observation
WHY_CONTINUOUS = ("DrQ-v2 and SAC need a bounded continuous action, a Box of shape (A,) with finite low < high (their "
                  "tanh policy acts in [-1, 1], mapped onto [low, high])")


class GymEnvError(ValueError):
    """The environment cannot be trained on from pixels as configured; ``str(error)`` is one line naming why."""


# --------------------------------------------------------------------------------------------- what the spaces allow
def action_space_problem(space: Any) -> str | None:
    """Why ``space`` is not an action DrQ-v2 and SAC can take, in words, or None."""
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        return f"its action space is {space}; {WHY_CONTINUOUS}"
    if len(space.shape) != 1 or space.shape[0] < 1:
        return f"its action space is a Box of shape {space.shape}; {WHY_CONTINUOUS}"
    if not np.issubdtype(space.dtype, np.floating):
        return f"its action space is a Box of dtype {space.dtype} (integers); {WHY_CONTINUOUS}"
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        return f"its action space {space} is unbounded; {WHY_CONTINUOUS}"
    if not np.all(space.low < space.high):
        return f"its action space {space} has low >= high in some dimension; {WHY_CONTINUOUS}"
    return None


def _is_image_space(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[2] == 3


def image_sources(observation_space: Any) -> list[str]:
    """The ``gym.pixels`` values that would read an image from this observation space: ``['observation']`` for a
    uint8 (H, W, 3) Box, the keys of such images in a Dict, else []."""
    from gymnasium import spaces

    if _is_image_space(observation_space):
        return ["observation"]
    if isinstance(observation_space, spaces.Dict):
        return [str(k) for k, sub in observation_space.spaces.items() if _is_image_space(sub)]
    return []


def pixel_source_problem(pixels: str, observation_space: Any, renders: bool) -> str | None:
    """Why ``pixels`` cannot give pictures for an env with this observation space (``renders``: it has an
    ``rgb_array`` render mode), in words, or None."""
    from gymnasium import spaces

    images = image_sources(observation_space)
    if pixels == "render":
        if renders:
            return None
        if images:
            return (f"it has no rgb_array render mode, and gym.pixels=render; its observation holds an image: "
                    f"gym.pixels={images[0]}")
        return ("it has no rgb_array render mode and its observation holds no uint8 (H, W, 3) image "
                f"({observation_space}): DrQ-v2 and SAC learn from pixels")
    if pixels == "observation":
        if _is_image_space(observation_space):
            return None
        hint = f"; its Dict observation has an image under gym.pixels={images[0]}" if images else ""
        return f"gym.pixels=observation, but its observation space is {observation_space}, not a uint8 (H, W, 3) " \
               f"Box{hint}"
    if not isinstance(observation_space, spaces.Dict):
        return f"gym.pixels={pixels} names a key of a Dict observation, but its observation space is " \
               f"{observation_space}; choices: render, observation"
    if pixels not in observation_space.spaces:
        keys = [str(k) for k in observation_space.spaces]
        near = difflib.get_close_matches(pixels, keys, n=3, cutoff=0.5)
        return f"gym.pixels={pixels} is not a key of its Dict observation (keys: {', '.join(keys)}" + \
            (f"; closest: {', '.join(near)})" if near else ")")
    if not _is_image_space(observation_space.spaces[pixels]):
        return f"gym.pixels={pixels}: {observation_space.spaces[pixels]} is not a uint8 (H, W, 3) image"
    return None


def _render_modes(creator: Any) -> list[str] | None:
    modes = (getattr(creator, "metadata", None) or {}).get("render_modes")
    return list(modes) if modes is not None else None


def _accepts(creator: Any, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# ------------------------------------------------------------------------------------------------------- the env
class GymPixelEnv(SplitStepEnv):
    """A Gymnasium env seen through pixels (see the module docstring); the :class:`drq.interfaces.Env` interface.

    env_id: a registered id or ``module.path:Name`` (:mod:`drq.envs.gym_ids`); kwargs: keyword arguments for
    ``gymnasium.make`` or the class (``camera_name``, ``default_camera_config``, ...); pixels: ``'render'`` |
    ``'observation'`` | a Dict key; frame_stack: k; action_repeat: frames per agent step; seed: the training stream's
    seed (the first unseeded reset's); size: H = W of the agent's frames in pixels.
    """

    def __init__(self, env_id: str, kwargs: Mapping[str, Any] | None = None, pixels: str = "render",
                 frame_stack: int = 3, action_repeat: int = 2, seed: int = 1, size: int = 84) -> None:
        from drq.envs.pixels import _positive_int, _seed  # the DMC env's argument checks, shared

        self.task_name = env_id
        self.pixels = pixels
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.action_repeat = _positive_int("action_repeat", action_repeat)
        self.size = _positive_int("size", size)
        self.seed = _seed(seed)
        self._source = gym_ids.resolve(env_id)  # GymIdError (a ValueError, one line) when nothing builds it
        self._mujoco = self._source.uses_mujoco  # a gymnasium MuJoCo env: width/height, a model to render videos of
        self.backend = os.environ.get("MUJOCO_GL") if self._mujoco else None  # run.json's gl_backend
        self._renderers: dict[Any, Any] = {}  # (size, camera) -> a MuJoCo renderer for videos
        self._exit_hook: Any = None
        self._env = self._make(dict(kwargs or {}))
        try:
            self._check_spaces()
            if self._mujoco:
                _pin_free_camera(self._env.unwrapped.mujoco_renderer, self._env.unwrapped.model)
        except BaseException:
            self._env.close()
            raise
        space = self._env.action_space  # the env's own bounds: the agent's [-1, 1] is mapped onto them
        self._set_action_space(space.low, space.high, space.shape, space.dtype)
        self.observation_shape: tuple[int, int, int] = (3 * self.frame_stack, self.size, self.size)
        self._frames = FrameStack(self.frame_stack)
        self._picture: np.ndarray | None = None  # the last picture (H, W, 3) uint8 the frame was made from
        self._seeded = False  # whether the env's own stream was seeded (the first reset seeds it)

    # ------------------------------------------------------------------------------------------ building
    def _fail(self, words: str) -> GymEnvError:
        return GymEnvError(f"gym.id={self.task_name}: {words}")

    def _make(self, kwargs: dict[str, Any]) -> Any:
        source = self._source
        modes = _render_modes(source.creator)
        self._renders = modes is None or "rgb_array" in modes
        if self._mujoco:
            if self.pixels == "render" and "width" not in kwargs and "height" not in kwargs:
                kwargs.update(width=self.size, height=self.size)  # the agent's picture, rendered at its size
            camera = kwargs.get("default_camera_config")
            if isinstance(camera, Mapping):  # lists from the command line -> arrays (MjvCamera.lookat[:] = value)
                kwargs["default_camera_config"] = {k: np.asarray(v, dtype=np.float64) if isinstance(v, (list, tuple))
                                                   else v for k, v in camera.items()}  # fmt: skip
        if self._renders and (modes is not None or _accepts(source.creator, "render_mode")):
            kwargs["render_mode"] = "rgb_array"
        try:
            if source.registered is not None:
                import gymnasium

                return gymnasium.make(source.registered, **kwargs)
            env = source.creator(**kwargs)
        except TypeError as error:  # an unknown keyword argument, most often
            raise self._fail(f"building it with {_shown(kwargs)} failed: {gym_ids._first_line(error)} "
                             "(gym.kwargs are passed to it as keyword arguments)") from None
        except Exception as error:  # noqa: BLE001 -- DependencyNotInstalled and the env's own errors: one line
            raise self._fail(f"building it failed: {type(error).__name__}: {gym_ids._first_line(error)}") from None
        import gymnasium

        if not isinstance(env, gymnasium.Env):
            raise self._fail(f"{source.entry_point} returned a {type(env).__name__}, not a gymnasium.Env")
        return env

    def _check_spaces(self) -> None:
        problem = action_space_problem(self._env.action_space)
        if problem is None:
            problem = pixel_source_problem(self.pixels, self._env.observation_space,
                                           self._renders and getattr(self._env, "render_mode", None) == "rgb_array")
        if problem is not None:
            raise self._fail(problem)

    # ------------------------------------------------------------------------------------------ pictures
    def _take_picture(self, observation: Any) -> np.ndarray:
        """The picture of the current state, uint8 (H, W, 3), from the configured source; one line when it is not
        one."""
        if self.pixels == "render":
            try:
                if self._mujoco:
                    _make_current(self._env.unwrapped.mujoco_renderer)
                picture = self._env.render()
            except Exception as error:  # noqa: BLE001 -- DependencyNotInstalled (pygame), GL errors: one line
                raise self._fail(f"env.render() failed: {type(error).__name__}: {gym_ids._first_line(error)}"
                                 + _gl_advice(error)) from None
            self._exit_close_after_first_render()
            what = "env.render()"
        elif self.pixels == "observation":
            picture, what = observation, "its observation"
        else:
            picture, what = observation[self.pixels], f"its observation[{self.pixels!r}]"
        try:
            frame = to_frame(picture, self.size)  # checks the picture (picture_problem) before it touches it
        except ValueError:
            raise self._fail(f"{picture_problem(picture, what)}: pixels must be uint8 (H, W, 3), RGB") from None
        self._picture = picture
        return frame

    def render(self, size: int = 256) -> np.ndarray:
        """The env's own view at ``size``: uint8 (size, size, 3), for videos; the agent's frames are not changed."""
        if self._mujoco:
            own = self._env.unwrapped.mujoco_renderer
            if self.pixels == "render" and (own.width, own.height) == (size, size) and self._picture is not None:
                return self._picture.copy()
            return self._mujoco_picture(size, None)
        picture = None
        if self.pixels != "render" and self._renders and getattr(self._env, "render_mode", None) == "rgb_array":
            picture = self._env.render()
        if picture_problem(picture) is not None:
            picture = self._picture
        if picture is None:
            raise RuntimeError("render() before reset(): there is no picture yet")
        return _resized(picture, size)

    def render_camera(self, size: int, camera: int | str) -> np.ndarray:
        """The view of MuJoCo camera ``camera`` (id or name) at ``size`` (``python -m drq.evaluate --camera``)."""
        if not self._mujoco:
            raise self._fail("--camera picks a MuJoCo camera, and this is not a gymnasium MuJoCo env")
        return self._mujoco_picture(size, camera)

    def _mujoco_picture(self, size: int, camera: int | str | None) -> np.ndarray:
        """A second renderer of the env's model and data at ``size`` (and camera), made once and kept."""
        renderer = self._renderers.get((size, camera))
        if renderer is None:
            import mujoco
            from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

            env = self._env.unwrapped
            own, model = env.mujoco_renderer, env.model
            camera_id = own.camera_id
            if camera is not None:
                camera_id = camera if isinstance(camera, int) else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA,
                                                                                     camera)  # fmt: skip
                if not -1 <= camera_id < model.ncam or (camera_id == -1 and not isinstance(camera, int)):
                    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
                    raise self._fail(f"camera {camera!r} is not one of its {model.ncam} cameras {names} (or -1, the "
                                     "free camera)")
            # a larger picture than the model's offscreen buffer needs a larger buffer (made with the context)
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, size)
            renderer = MujocoRenderer(model, env.data, own.default_cam_config if camera is None else None, size, size,
                                      own.max_geom, camera_id=camera_id, visual_options=own._vopt)  # fmt: skip
            self._renderers[(size, camera)] = renderer
        _make_current(renderer)
        picture = renderer.render("rgb_array")
        self._exit_close_after_first_render()
        return picture

    def _exit_close_after_first_render(self) -> None:
        """Close this env at interpreter exit *before* MuJoCo terminates the EGL display (atexit runs its handlers
        last-registered first, and the display's ``eglTerminate`` was registered when the first GL context was
        made): closing after it printed EGL tracebacks."""
        if self._exit_hook is None and self._mujoco:
            ref = weakref.ref(self)

            def close_before_the_gl_display_goes() -> None:
                env = ref()
                if env is not None:
                    env.close()

            self._exit_hook = close_before_the_gl_display_goes
            atexit.register(close_before_the_gl_display_goes)

    # ------------------------------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode: ``env.reset(seed=seed)``; ``None``: the env's own stream goes on (the first reset
        seeds it with the env's ``seed``). The first frame fills all k slots of the stack."""
        from drq.envs.pixels import _seed

        if seed is None and not self._seeded:
            seed = self.seed
        observation, _ = self._env.reset(seed=None if seed is None else _seed(seed))
        self._seeded = True
        stacked = self._frames.reset(self._take_picture(observation))
        self._pending_action, self._needs_reset = None, False
        return TimeStep(observation=stacked, action=np.zeros(self.action_shape, np.float32), reward=0.0,
                        discount=1.0, first=True, last=False)  # fmt: skip

    def _run(self, action: np.ndarray, env_action: np.ndarray) -> TimeStep:
        """``env_action`` for ``action_repeat`` frames, or until the episode terminates or is truncated; then one
        picture. Terminated: discount 0.0; truncated: discount 1.0; both ``last``."""
        reward, discount, last = 0.0, 1.0, False
        for _ in range(self.action_repeat):
            observation, frame_reward, terminated, truncated, _ = self._env.step(env_action)
            reward += float(frame_reward)
            if terminated or truncated:
                discount, last = (0.0 if terminated else 1.0), True
                break
        self._needs_reset = last
        stacked = self._frames.push(self._take_picture(observation))
        return TimeStep(observation=stacked, action=action, reward=reward, discount=discount, first=False, last=last)

    def close(self) -> None:
        """Close the video renderers and the env (its GL contexts); safe to call twice."""
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        renderers, self._renderers = self._renderers, {}
        for renderer in renderers.values():
            renderer.close()
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()


def _make_current(renderer: Any) -> None:
    """Make ``renderer``'s GL context current before it renders. gymnasium does so only when one renderer holds two
    viewers; with two renderers in one process (an env's own and its video renderer, or a train and an eval env in
    the trainer's process) a render would otherwise draw with the other one's context (measured: pixels off by up to
    255 on Reacher-v5 and HalfCheetah-v5 in the same state). Cheap when it is current already."""
    renderer._get_viewer("rgb_array").make_context_current()


def _pin_free_camera(renderer: Any, model: Any) -> None:
    """Make a gymnasium MuJoCo env's free camera a function of its model only.

    gymnasium points the free camera (the default view of most of its MuJoCo envs) at the median of the geoms'
    positions *at the first render*, so the camera depends on the state the env happens to be in then: a fresh worker
    (a resume, a restart, another eval worker) that first renders at episode k sees the scene from another place than
    one that first rendered at episode 0 (InvertedPendulum-v5: up to 43 levels of difference in the same state). Here
    the look-at point is taken once from the model's default state (``qpos0``) and given to every view of this env
    (its own renderer and the video renderers) through ``default_cam_config``; a ``lookat`` of the user's wins."""
    import mujoco

    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    lookat = np.median(data.geom_xpos, axis=0) if model.ngeom else np.zeros(3)
    renderer.default_cam_config = {"lookat": lookat, **(renderer.default_cam_config or {})}


def _resized(picture: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): area interpolation to shrink, bilinear to enlarge (video only)."""
    if picture.shape[:2] == (size, size):
        return np.ascontiguousarray(picture)
    import cv2

    shrink = picture.shape[0] * picture.shape[1] > size * size
    return cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _shown(kwargs: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + "}" if kwargs else "no keyword arguments"


def _gl_advice(error: BaseException) -> str:
    """For a render that failed for want of OpenGL: what drq.envs.rendering says to install."""
    text = f"{type(error).__name__} {error}".lower()
    if not any(word in text for word in ("egl", "opengl", "glfw", "osmesa", "gl context")):
        return ""
    from drq.envs import rendering

    try:
        rendering.setup_rendering()
    except rendering.RenderingUnavailable as unavailable:
        return f" ({str(unavailable).splitlines()[0]} {rendering.INSTALL_HINTS['egl']})"
    return ""
