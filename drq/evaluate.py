"""Evaluate a saved agent and export a video of its first episode.

    python -m drq.evaluate RUN_DIR_OR_SNAPSHOT [--episodes 10] [--size 256] [--camera ID] [--out PATH]
                           [--precision auto|fp32|bf16]

Episode ``j`` starts from the initial state the trainer's evaluation at the snapshot's frame gives its episode ``j``
(``drq.run.evaluation.episode_seeds(seed, frame, j)``), so the returns repeat that evaluation's (same precision and
machine). The snapshot carries the run's config, so the task, frame stack, action repeat and networks are rebuilt
from it. The agent acts with its mean action (``eval_mode=True``), in ``--precision`` (default ``auto``: bf16 only
where the hardware has it natively, ``drq.speed.precision``; the training run's precision does not matter for acting).
``--camera`` changes only the video's camera, never what the agent sees (a DMC task's camera id or name, or a
gymnasium MuJoCo env's). Shows the episodes' progress on stderr while
they run (a bar with episodes done, frames/s and ETA on a terminal, else one line per finished episode:
``drq.run.evaluation.EvalProgress``), then prints the precision, one line per episode and a JSON object as the last line
on stdout:
``{"snapshot", "frame", "task", "agent", "episodes", "mean_return", "returns", "video"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __name__ == "__main__":  # the entry point, before torch loads (a call of main() from python changes nothing)
    from drq.machine.process_tuning import tune_process

    tune_process()

import numpy as np  # noqa: E402

from drq.config import schema as config_schema
from drq.run import snapshot as snapshots
from drq.run.evaluation import EvalProgress, episode_seeds, run_episodes
from drq.speed.precision import PRECISIONS, check_precision, resolve_precision
from drq.run.build import env_factory, make_agent_from_config, resolve_device
from drq.run.video import VideoRecorder

if TYPE_CHECKING:
    from drq.interfaces import Env


def evaluate(source: str | Path, episodes: int = 10, size: int = 256, camera: int | str | None = None,
             out: str | Path | None = None, device: str = "auto", seed: int | None = None,
             precision: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Run ``episodes`` evaluation episodes of the agent in ``source``; write the first one's video to ``out``."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    check_precision(precision)
    if size < 16 or size % 2:
        raise ValueError(f"--size must be an even number >= 16 (H.264), got {size}")
    path = snapshots.resolve_path(source)
    state = snapshots.load(path)
    if not isinstance(state.get("config"), dict) or not state["config"]:
        raise snapshots.SnapshotError(f"snapshot {path} holds no run config")
    try:  # a key the saved config predates takes the schema's legacy value or default (drq.config.schema)
        cfg = config_schema.from_saved(state["config"])
    except config_schema.ConfigError as error:
        raise snapshots.SnapshotError(f"snapshot {path} holds a config this drq cannot read: "
                                      f"{str(error).splitlines()[0]}") from None
    frame = int(state["counters"]["frame"])
    seed = cfg.seed if seed is None else seed
    env = env_factory(cfg, seed=seed)()
    device = resolve_device(device)
    precision, reason = resolve_precision(precision, device)
    print(f"precision: {precision} ({reason})")
    eager = dataclasses.replace(cfg, compile="none", cuda_graphs=False)  # act() only: nothing to speed up
    agent = make_agent_from_config(eager, env.observation_shape, env.action_shape, device, precision)
    try:
        agent.load_state_dict(state["agent"])
    except Exception as error:  # noqa: BLE001
        raise snapshots.SnapshotError(f"snapshot {path} does not fit its own agent config: {error}") from None
    out = Path(out) if out else path.parent / "videos" / f"evaluate_{frame}.mp4"
    action_repeat = cfg.action_repeat

    def picture() -> np.ndarray:
        if camera is None:
            return env.render(size)
        return env.render_camera(size, camera)  # a DMC task's camera, or a gymnasium MuJoCo env's

    recorder = VideoRecorder(enabled=True)

    def record(episode: int, _env: Env, reward: float, episode_return: float, frames: int) -> None:
        if episode == 0:
            recorder.record(picture(), frame, reward, episode_return, frames)

    step = int(state["counters"]["step"])
    try:
        with EvalProgress(f"evaluate | frame {frame:,}") as progress:
            results = run_episodes([env], lambda obs: agent.act(obs, step, eval_mode=True), episodes, action_repeat,
                                   cfg.max_episode_frames, on_step=record, progress=progress,
                                   seeds=episode_seeds(seed, frame, episodes))  # fmt: skip
        video = recorder.save(out)
    finally:
        env.close()
    returns = [r.episode_return for r in results]
    for i, r in enumerate(results):
        print(f"episode {i + 1}/{episodes}: return {r.episode_return:.2f} ({r.frames} frames)")
    return {"snapshot": str(path), "frame": frame, "task": cfg.task_name, "agent": cfg.agent.name,
            "episodes": episodes, "mean_return": float(np.mean(returns)), "returns": returns,
            "video": str(video) if video else None}  # fmt: skip


def _camera(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drq.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run dir (holding snapshot.pt) or a snapshot file")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    parser.add_argument("--size", type=int, default=256, help="video height = width in pixels (default 256)")
    parser.add_argument("--camera", type=_camera, default=None, help="video camera id or name (default: the task's)")
    parser.add_argument("--out", default=None, help="video path (default RUN_DIR/videos/evaluate_<frame>.mp4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode j starts from seed (seed, frame, j), as the trainer's evaluation at the "
                             "snapshot's frame (default: the run's seed)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default: bf16 where native, else fp32) | fp32 | bf16")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.source, args.episodes, args.size, args.camera, args.out, args.device, args.seed,
                          args.precision)
    except (snapshots.SnapshotError, ValueError) as error:
        print(f"drq.evaluate: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
