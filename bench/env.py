"""Environment speed at each render-quality setting, and how much the pixels change; or a Gymnasium env's adapter
overhead.

    python bench/env.py [--task walker_walk] [--size 84] [--agent-steps 200] [--action-repeat 2]
    python bench/env.py --gym InvertedPendulum-v5 [--size 84] [--agent-steps 400] [--action-repeat 2]

``--gym ID`` (a registered id or module.path:Class): agent steps per second of the same env, same seeds, same actions,
three ways in lockstep: raw gymnasium (``gymnasium.make(id, render_mode='rgb_array')``, at ``width = height = size``
for a MuJoCo env; ``action_repeat`` env steps, cut at an episode's end, then one ``render()``; ``reset`` + ``render``
at an episode's end), drq's adapter in this process (``drq.envs.gym_pixels.GymPixelEnv``: the same plus the [-1, 1]
mapping, the resize when the picture has another size and the frame stack) and the adapter in its worker process
(``drq.envs.worker.AsyncEnv``, ``step`` = ``step_async`` + ``step_wait``: plus the pipe). ``adapter_overhead`` =
1 - adapter / raw steps per second (the issue's bar: at most 0.10); ``worker_overhead`` the same through the worker.
Each way's own time is summed separately, interleaved step by step so a shared machine's noise spreads over all three.

Frames are environment frames: every action-repeat sub-step is a frame (dm_control control step), and the env renders
once per agent step (after its last frame). So ``frames_per_s = agent_steps * action_repeat / seconds``, seconds
covering physics + rendering + frame stacking.

The three settings step in lockstep with the same seed and actions, so they go through the same physics states; each
env's own step time is accumulated separately (interleaving spreads the noise of a shared machine over all three).
``mean_abs_pixel_diff_<setting>`` is the mean |difference| (0..255 scale) between that setting's newest frame and the
default one on the same state, over all steps and pixels. ``physics_steps_per_s`` is frames per second with no
rendering at all (a bare ``suite.load`` env).

Overlap (``drq.envs.worker.AsyncEnv``, default quality): ms per agent step for a plain synchronous ``step``, and for
``step`` + 50 ms of other work (the agent update) done sequentially (``sync_plus_work_ms``) vs. overlapped as
``step_async; work; step_wait`` (``async_plus_work_ms``), with the work either sleeping (``_sleep``: a GPU update) or
spinning one CPU core (``_busy``: a CPU update). Overlap works when ``async_plus_work_ms`` is close to
max(50, ``sync_step_ms``) instead of 50 + ``sync_step_ms``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from drq.envs.pixels import make_env
from drq.envs.worker import AsyncEnv

SETTINGS: dict[str, object] = {"default": False, "no_msaa": "no_msaa", "no_shadows": "no_shadows"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="walker_walk")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--agent-steps", type=int, default=200)
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--overlap-steps", type=int, default=40, help="agent steps per overlap measurement (0: skip)")
    parser.add_argument("--gym", default=None, metavar="ID", help="a Gymnasium env: the adapter's overhead instead")
    return parser


def gym_main(args: argparse.Namespace) -> None:
    """The adapter's cost over raw gymnasium stepping and rendering (see the module docstring); prints one JSON line."""
    import functools

    import gymnasium

    from drq.envs import gym_ids
    from drq.envs.gym_pixels import GymPixelEnv
    from drq.run.seeds import train_episode_seed

    source = gym_ids.resolve(args.gym)  # chooses the GL backend before the env's module imports mujoco
    size_kwargs = {"width": args.size, "height": args.size} if source.uses_mujoco else {}
    if source.registered is not None:
        raw = gymnasium.make(source.registered, render_mode="rgb_array", **size_kwargs)
    else:
        raw = source.creator(render_mode="rgb_array", **size_kwargs)
    factory = functools.partial(GymPixelEnv, args.gym, frame_stack=3, action_repeat=args.action_repeat,
                                seed=args.seed, size=args.size)  # fmt: skip
    adapter = factory()
    worker = AsyncEnv(factory)
    low, high = adapter.action_low, adapter.action_high

    def raw_reset(seed: int) -> None:
        raw.reset(seed=seed)
        raw.render()

    def raw_step(action: np.ndarray) -> bool:
        env_action = (low + (action.astype(np.float64) + 1.0) * 0.5 * (high - low)).astype(raw.action_space.dtype)
        for _ in range(args.action_repeat):
            _, _, terminated, truncated, _ = raw.step(env_action)
            if terminated or truncated:
                raw.render()
                return True
        raw.render()
        return False

    ways = {"raw": (raw_reset, raw_step), "adapter": (adapter.reset, lambda a: adapter.step(a).last),
            "worker": (worker.reset, lambda a: worker.step(a).last)}  # fmt: skip
    for reset, _ in ways.values():  # episode k seeded as the trainer seeds it, the same episodes for the three
        reset(train_episode_seed(args.seed, 0))  # GL contexts and first renders outside the timed region
    actions = np.random.default_rng(0).uniform(-1, 1, (args.agent_steps, *adapter.action_shape)).astype(np.float32)
    seconds, episodes = dict.fromkeys(ways, 0.0), dict.fromkeys(ways, 0)
    for action in actions:
        for name, (reset, step) in ways.items():
            start = time.perf_counter()
            if step(action):
                episodes[name] += 1
                reset(train_episode_seed(args.seed, episodes[name]))
            seconds[name] += time.perf_counter() - start
    assert len(set(episodes.values())) == 1, f"the three ways played different episodes: {episodes}"
    rate = {name: len(actions) / seconds[name] for name in ways}
    for env in (raw, adapter, worker):
        env.close()
    from drq.speed.hardware import describe

    print(json.dumps({
        "gym": args.gym, "size": args.size, "action_repeat": args.action_repeat, "agent_steps": len(actions),
        "episodes": episodes["raw"], "raw_steps_per_s": rate["raw"], "adapter_steps_per_s": rate["adapter"],
        "worker_steps_per_s": rate["worker"], "adapter_overhead": 1 - rate["adapter"] / rate["raw"],
        "worker_overhead": 1 - rate["worker"] / rate["raw"], "backend": adapter.backend,
        "notes": "agent steps = action_repeat gym steps (fewer at an episode's end) + one render; resets counted",
        "machine": describe("cpu"),
    }))  # fmt: skip


def main() -> None:
    args = build_parser().parse_args()
    if args.gym:
        gym_main(args)
        return

    envs = {
        name: make_env(args.task, action_repeat=args.action_repeat, seed=args.seed, size=args.size, fast_render=value)
        for name, value in SETTINGS.items()
    }
    for env in envs.values():
        env.reset()  # creates the GL contexts outside the timed region
    action_shape = envs["default"].action_shape
    actions = np.random.default_rng(0).uniform(-1, 1, (args.agent_steps, *action_shape)).astype(np.float32)

    seconds = dict.fromkeys(envs, 0.0)
    frames = dict.fromkeys(envs, 0)
    abs_diff_sum = dict.fromkeys(envs, 0.0)
    for action in actions:
        newest = {}
        for name, env in envs.items():
            start = time.perf_counter()
            ts = env.step(action)
            if ts.last:
                env.reset()
            seconds[name] += time.perf_counter() - start
            frames[name] += args.action_repeat
            newest[name] = ts.frame.astype(np.int16)
        for name in envs:
            abs_diff_sum[name] += float(np.abs(newest[name] - newest["default"]).mean())

    physics_steps_per_s = _physics_steps_per_s(envs["default"], actions)
    result: dict[str, object] = {
        "task": args.task,
        "size": args.size,
        "action_repeat": args.action_repeat,
        "agent_steps": args.agent_steps,
        "backend": envs["default"].backend,
        "frames_per_s": frames["default"] / seconds["default"],
    }
    for name in ("no_msaa", "no_shadows"):
        result[f"frames_per_s_{name}"] = frames[name] / seconds[name]
        result[f"mean_abs_pixel_diff_{name}"] = abs_diff_sum[name] / len(actions)
    result["physics_steps_per_s"] = physics_steps_per_s
    result["notes"] = (
        "frames = env frames (action-repeat sub-steps); one render per agent step; "
        "physics_steps_per_s = frames/s without rendering; pixel diff on the 0..255 scale vs default"
    )
    if args.overlap_steps > 0:
        kwargs = dict(task=args.task, action_repeat=args.action_repeat, seed=args.seed, size=args.size)
        result.update(_overlap_ms(envs["default"], kwargs, actions[: args.overlap_steps]))
    for env in envs.values():
        env.close()
    from drq.speed.hardware import describe

    result["machine"] = describe("cpu")
    print(json.dumps(result))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _overlap_ms(sync_env, make_env_kwargs: dict, actions: np.ndarray, work_s: float = 0.05) -> dict[str, float]:
    """Mean ms per agent step: sync step, sync step + work, and step_async; work; step_wait in a worker process."""

    def per_step_ms(env, step) -> float:
        env.reset()
        start = time.perf_counter()
        for action in actions:
            if step(env, action).last:
                env.reset()
        return 1000 * (time.perf_counter() - start) / len(actions)

    def overlapped(work):
        def step(env, action):
            env.step_async(action)
            work(work_s)
            return env.step_wait()

        return step

    def sequential(work):
        def step(env, action):
            ts = env.step(action)
            work(work_s)
            return ts

        return step

    out = {"sync_step_ms": per_step_ms(sync_env, lambda env, action: env.step(action))}
    with AsyncEnv(**make_env_kwargs) as async_env:
        for name, work in (("sleep", time.sleep), ("busy", _spin)):
            out[f"sync_plus_work_ms_{name}"] = per_step_ms(sync_env, sequential(work))
            out[f"async_plus_work_ms_{name}"] = per_step_ms(async_env, overlapped(work))
    out["work_ms"] = 1000 * work_s
    return out


def _physics_steps_per_s(env, actions: np.ndarray) -> float:
    """Frames (dm_control control steps) per second of the underlying env, no rendering."""
    dm_env = env._env  # the bench measures the env's own internals on purpose
    dm_env.reset()
    count, start = 0, time.perf_counter()
    for action in actions:
        for _ in range(env.action_repeat):
            if dm_env.step(env._env_action(action)).last():
                dm_env.reset()
            count += 1
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
