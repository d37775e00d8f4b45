"""CPU learning check: does an agent learn a real pixel task within a wall-clock budget on this machine?

    python bench/learn.py [--agent drqv2|sac] [--precision auto|fp32|bf16] [--task cartpole_balance]
                          [--minutes 30] [--target 800] [--run-dir DIR] [--random-episodes 10] [override ...]

``--task`` is a DMC task (a cfgs/task config or a suite domain_task) or a Gymnasium env, run as ``task=gym
gym.id=<task>``: :data:`GYM_TASKS` (InvertedPendulum-v5: terminates when the pole falls; Reacher-v5: only truncates,
50-frame episodes; the example env examples.point_reach:PointReach: terminates on success, truncates at 100 frames)
with their targets and settings, or any other id or entry point with ``--target`` given. Before training, the uniformly
random policy (the seed phase's) plays ``--random-episodes`` episodes of the same env (seeded as evaluations are): its
mean return is ``random_policy_return`` in the JSON, the floor that "far above random" is measured from.

Runs ``python train.py`` (the real trainer, 84x84 pixels, frame stack 3) with the settings below, reads its eval.csv
as it grows, and stops the run when the wall-clock budget is spent (SIGINT: the trainer snapshots and exits) or the
frames run out. Settings chosen for a 2-core CPU (everything else is the task's published preset):

    both: batch_size 64, replay 100k, 5 eval episodes (on 2 eval workers: eval_workers=auto on 2 cores),
          fast_render no_shadows (no MSAA, no shadow pass: ~3x cheaper 84x84 renders, which on 2 cores compete with
          the update; the pictures differ from dm_control's by 3.5/255 per pixel on average, mostly the shadows);
    SAC: DrQ's cartpole protocol: action repeat 8, an update every agent step, 1000 seed frames, evals every 4000
         frames, nstep 1, lr 1e-3, init temperature 0.1, K=M=2;
    DrQ-v2: its own published protocol (action repeat 2, an update every 2 agent steps, 4000 seed frames, 2000
         uniform exploration steps, nstep 3, lr 1e-4, evals every 8000 frames) except the exploration std, which
         decays over the first 10k agent steps, linear(1.0,0.1,10000), instead of the published 100k: a 30-minute
         budget buys about 40k frames (20k agent steps), and with the published schedule the std is still 0.82 then.
         (At action repeat 8 DrQ-v2's actor saturated in 3 runs out of 3; lr 2e-4 saturated it too; batch 32 learned
         slower per frame. See docs/benchmarks.md, "Learning on a 2-core CPU".)

Gymnasium tasks take DrQ-v2's settings above without ``fast_render`` (a DMC key), plus their own
(:data:`GYM_TASKS`). Extra arguments are hydra overrides and win over these. The config is composed and checked before
train.py starts (a bad value: one line, exit 2); this bench's own frame counts above are rounded up to the action
repeat in force (with a user's ``action_repeat=6``: 4000 -> 4002), the user's never. Last line: one JSON object with task, agent,
precision, frames, minutes, final_eval_return, best_eval_return, minutes_to_target (null if never), frames_to_target,
target, first_eval_return (the untrained agent's mean action), random_policy_return (uniform actions; null with
``--random-episodes 0``), zero_action_return (the action 0 throughout: "do nothing", the floor to beat where the reward
charges for the action), run_dir, the overrides used and rounded_to_action_repeat (``{key: [asked, used]}``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drq.speed.hardware import describe  # noqa: E402
from drq.speed.precision import resolve_precision  # noqa: E402
from drq.config.schema import FRAME_COUNTS  # noqa: E402
from drq.run.build import resolve_device  # noqa: E402

sys.path.append(str(ROOT / "bench"))  # last: bench/replay.py must not shadow the replay package
from bench_config import compose, compose_or_exit, exit_on_bad_config, round_up, rounding_note  # noqa: E402

COMMON = ["action_repeat=8", "batch_size=64", "agent.update_every_steps=1", "num_seed_frames=1000",
          "num_eval_episodes=5", "eval_every_frames=4000", "fast_render=no_shadows", "num_train_frames=500000",
          "replay_buffer_size=100000", "save_video=false", "snapshot_every_frames=100000", "log_every_frames=2000",
          "wandb.mode=disabled"]  # fmt: skip
PER_AGENT = {
    # DrQ-v2 at action repeat 8 saturated its actor's tanh in 3 of 3 runs (lr 3e-4; lr 1e-4 with 1000 and 8000 seed
    # frames): eval stuck at 136 (docs/benchmarks.md, "Learning"). So it runs DrQ-v2's own published cartpole protocol:
    # action repeat 2, an update every 2 agent steps, 4000 seed frames, 2000 exploration steps, nstep 3, lr 1e-4.
    # The std schedule is in agent steps: 10k agent steps = 20k frames, half of what 30 minutes buy here.
    "drqv2": ["action_repeat=2", "agent.update_every_steps=2", "num_seed_frames=4000", "agent.num_expl_steps=2000",
              "nstep=3", "lr=1e-4", "eval_every_frames=8000", "stddev_schedule='linear(1.0,0.1,10000)'"],
    "sac": [],  # DrQ's 1-step targets (cfgs/agent/sac.yaml)
}


# Gymnasium tasks: target eval return and settings (after COMMON and PER_AGENT). A frame is one gym step; a MuJoCo
# env's own frame_skip is inside it (InvertedPendulum-v5: 2 physics steps of 0.02 s, Reacher-v5: 2 of 0.01 s).
GYM_TASKS: dict[str, dict] = {
    # balance from pixels; reward 1 per frame alive, episodes of at most 1000 frames: 900 is the bar. A fall
    # ends the episode (terminated), so early episodes last a few frames: evaluations are cheap until it balances.
    "InvertedPendulum-v5": {"target": 900.0, "overrides": []},
    # reach a random target; reward -distance - |action|^2 per frame over 50 frames, never terminated (truncated at 50).
    # Uniform actions pay ~0.67 per frame of control cost, so "do nothing" (zero_action_return, about -10) is already
    # far above random, and the untrained agent's near-zero mean action scores about -9: the target asks for reaching
    # (-5; a fingertip held on the target scores about -4 with what it costs to get there). gymnasium's default camera
    # shows the arena a third of the picture wide, its target a pixel; looking straight down from 0.7 m fills the
    # picture with it (DMC's reacher view). docs/gymnasium.md's run drew the target larger too (xml_file, its Cameras).
    "Reacher-v5": {"target": -5.0, "overrides": [
        "eval_every_frames=4000", "num_eval_episodes=10",
        "+gym.kwargs={default_camera_config:{distance:0.7,elevation:-90.0,azimuth:90.0,lookat:[0.0,0.0,0.0]}}"]},
    # examples/point_reach.py: reward -distance per frame; reaching the target ends the episode, 100 frames truncate it
    "examples.point_reach:PointReach": {"target": -15.0, "overrides": ["eval_every_frames=4000",
                                                                        "num_eval_episodes=10"]},
}
DMC_ONLY = ("fast_render",)  # COMMON's keys that a Gymnasium run must leave at their defaults


def is_gym_task(task: str) -> bool:
    """A Gymnasium id or entry point, not a DMC task config or suite task."""
    from drq.config.schema import group_choices
    from drq.envs import tasks

    if task in group_choices("task"):
        return False
    try:
        tasks.resolve_task(task)
    except ValueError:
        return True
    return False


def baseline_return(cfg: dict, episodes: int, policy: str) -> float | None:
    """Mean return over ``episodes`` episodes of the run's env, seeded as the evaluation at frame 0 is, of ``policy``:
    ``'random'``, uniform actions in [-1, 1] (the seed phase's); ``'zero'``, the action 0 (the middle of the env's
    bounds: "do nothing", which beats random wherever the reward charges for the action, as Reacher-v5's does).
    None for ``episodes`` 0."""
    if episodes < 1:
        return None
    from drq.config.schema import load
    from drq.run.build import env_factory
    from drq.run.evaluation import episode_seeds, run_episodes

    config = load(cfg)
    env = env_factory(config)()
    rng = np.random.default_rng(config.seed)
    act = {"random": lambda obs: rng.uniform(-1, 1, env.action_shape).astype(np.float32),
           "zero": lambda obs: np.zeros(env.action_shape, np.float32)}[policy]  # fmt: skip
    try:
        results = run_episodes([env], act, episodes, config.action_repeat, config.max_episode_frames,
                               seeds=episode_seeds(config.seed, 0, episodes))  # fmt: skip
    finally:
        env.close()
    return float(np.mean([r.episode_return for r in results]))


def read_evals(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f) if row.get("episode_reward")]


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="drqv2", choices=sorted(PER_AGENT))
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--task", default="cartpole_balance")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--target", type=float, default=None,
                   help="eval return to reach (default: 800 for DMC tasks, GYM_TASKS' for Gymnasium ones)")
    p.add_argument("--random-episodes", type=int, default=10, help="episodes of the random policy measured first")
    p.add_argument("--stop-at-target", action="store_true", help="stop as soon as an eval reaches the target")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("overrides", nargs="*")
    return p


def train_overrides(args: argparse.Namespace) -> tuple[list[str], dict, dict[str, list[int]]]:
    """The overrides this bench gives ``train.py`` (without ``hydra.run.dir``), the config they compose, and
    ``{key: [asked, used]}`` for this bench's own frame counts (COMMON, PER_AGENT) rounded up to the action repeat in
    force (a user's ``action_repeat=``; they are multiples of the bench's own 2 and 8). The user's overrides come last
    and win (a key this bench sets is left out when the user gives it: hydra refuses a ``+key`` given twice, as in
    ``'+gym.kwargs={...}'``); their values are never rounded."""
    gym = is_gym_task(args.task)
    task = ["task=gym", f"gym.id={args.task}"] if gym else [f"task={args.task}"]
    head = [*task, f"agent={args.agent}", f"precision={args.precision}", f"seed={args.seed}"]
    extra = GYM_TASKS.get(args.task, {}).get("overrides", []) if gym else []
    ours = dict(o.split("=", 1) for o in COMMON + PER_AGENT[args.agent] + extra)  # later entries win, as in hydra
    for key in DMC_ONLY if gym else ():
        ours.pop(key)
    user = {o.split("=", 1)[0].lstrip("+") for o in args.overrides}
    ours = {k: v for k, v in ours.items() if k.lstrip("+") not in user}  # the user's own value replaces ours
    repeat = int(compose(head + [f"{k}={v}" for k, v in ours.items()] + args.overrides)["action_repeat"])
    frames = {k: int(v) for k, v in ours.items() if k in FRAME_COUNTS and k not in user}
    counts, rounded = round_up(frames, repeat)
    ours.update({k: str(v) for k, v in counts.items()})
    overrides = head + [f"{k}={v}" for k, v in ours.items()] + list(args.overrides)
    return overrides, compose(overrides), rounded


def main() -> None:
    args = build_parser().parse_args()
    if args.target is None:
        known = GYM_TASKS.get(args.task) if is_gym_task(args.task) else {"target": 800.0}
        if known is None:
            raise SystemExit(f"bench/learn.py: --task {args.task}: give --target (the known Gymnasium tasks: "
                             f"{', '.join(GYM_TASKS)})")
        args.target = known["target"]
    name = args.task.replace("/", "_").replace(":", "_")
    run_dir = Path(args.run_dir or f"/tmp/drq_learn/{name}_{args.agent}_{args.precision}_s{args.seed}").resolve()
    overrides, cfg, rounded = compose_or_exit("bench/learn.py", lambda: train_overrides(args))
    exit_on_bad_config("bench/learn.py", cfg)
    random_return = baseline_return(cfg, args.random_episodes, "random")
    zero_return = baseline_return(cfg, args.random_episodes, "zero")
    if rounded:
        print(rounding_note("bench/learn.py", rounded, cfg["action_repeat"]), file=sys.stderr)
    overrides.append(f"hydra.run.dir={run_dir}")
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    print(" ".join(cmd), file=sys.stderr)
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ))
    minutes_to_target = frames_to_target = None
    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the run like Ctrl-C (background jobs ignore SIGINT)
    try:
        while proc.poll() is None:
            time.sleep(5)
            evals = read_evals(run_dir / "eval.csv")
            hit = [e for e in evals if e["episode_reward"] >= args.target]
            if hit and minutes_to_target is None:
                minutes_to_target = round(hit[0]["total_time"] / 60, 2)
                frames_to_target = int(hit[0]["frame"])
                if args.stop_at_target:
                    break
            if time.time() - start > args.minutes * 60:
                break
    except KeyboardInterrupt:
        print("bench/learn.py: interrupted; stopping the trainer (it snapshots) and reporting what it reached",
              file=sys.stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    evals = read_evals(run_dir / "eval.csv")
    if not evals:
        raise SystemExit(f"bench/learn.py: no evaluations in {run_dir / 'eval.csv'} "
                         f"(trainer exit code {proc.returncode})")
    within = [e for e in evals if e["total_time"] <= args.minutes * 60] or evals[:1]
    device = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("device=")), "auto")
    device = resolve_device(device)
    print(json.dumps({
        "task": args.task, "agent": args.agent, "precision": args.precision,
        "precision_resolved": resolve_precision(args.precision, device)[0], "machine": describe(device),
        "seed": args.seed,
        "frames": int(within[-1]["frame"]), "minutes": round(within[-1]["total_time"] / 60, 2),
        "final_eval_return": round(within[-1]["episode_reward"], 1),
        "best_eval_return": round(max(e["episode_reward"] for e in within), 1),
        "first_eval_return": round(evals[0]["episode_reward"], 1),
        "random_policy_return": None if random_return is None else round(random_return, 1),
        "zero_action_return": None if zero_return is None else round(zero_return, 1),
        "minutes_to_target": minutes_to_target, "frames_to_target": frames_to_target, "target": args.target,
        "budget_minutes": args.minutes, "run_dir": str(run_dir), "overrides": overrides[:-1],
        "rounded_to_action_repeat": rounded,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
