"""Wall time of one evaluation (the trainer's ``evaluate``: episodes with the mean action) with 1 and with K eval workers.

    python bench/eval.py [--task cartpole_balance] [--agent drqv2] [--precision auto] [--episodes 5]
                         [--workers 2] [--action-repeat 2] [--fast-render no_msaa] [--repeats 2]

Plays ``--episodes`` episodes with a freshly initialised agent (the speed does not depend on the weights) through
``drq.run.evaluation.run_episodes``: once on one in-process environment (``eval_workers=1``) and once on
``--workers`` ``AsyncEnv`` worker processes (``eval_workers=K``), alternating ``--repeats`` times, after one untimed
evaluation of each (worker start-up, first renders). The last line is one JSON object: task, agent, precision,
episodes, workers, fast_render, seconds_one_env, seconds_workers (the best of the repeats), speedup, frames_per_eval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drq.machine.process_tuning import tune_process  # noqa: E402

tune_process()  # before torch: huge pages, passive OpenMP waiting, glibc keeping freed memory (as train.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole_balance")
    p.add_argument("--agent", default="drqv2", choices=["drqv2", "sac"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--action-repeat", type=int, default=2)
    p.add_argument("--fast-render", default="no_msaa", choices=["false", "no_msaa", "no_shadows"])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    from drq.agents import make_agent
    from drq.envs.pixels import make_env
    from drq.envs.worker import AsyncEnv
    from drq.run.evaluation import episode_seeds, run_episodes
    from drq.speed.hardware import describe

    fast_render = False if args.fast_render == "false" else args.fast_render
    kwargs = dict(task=args.task, frame_stack=3, action_repeat=args.action_repeat, seed=1, size=84, camera_id=None,
                  fast_render=fast_render)  # fmt: skip
    one = [make_env(**kwargs)]
    workers = [AsyncEnv(**kwargs) for _ in range(args.workers)]
    agent = make_agent(args.agent, obs_shape=tuple(one[0].observation_shape), action_shape=tuple(one[0].action_shape),
                       device="cpu", precision=args.precision)  # fmt: skip

    def evaluation(envs: list) -> tuple[float, int]:
        start = time.perf_counter()
        results = run_episodes(envs, lambda obs: agent.act(obs, 0, eval_mode=True), args.episodes,
                               args.action_repeat, seeds=episode_seeds(1, 0, args.episodes))  # fmt: skip
        return time.perf_counter() - start, sum(r.frames for r in results)

    try:
        evaluation(one), evaluation(workers)  # untimed: start-up
        times: dict[str, list[float]] = {"one": [], "workers": []}
        for _ in range(args.repeats):
            seconds, frames = evaluation(one)
            times["one"].append(seconds)
            times["workers"].append(evaluation(workers)[0])
    finally:
        for env in one + workers:
            env.close()
    best_one, best_workers = min(times["one"]), min(times["workers"])
    print(json.dumps({
        "task": args.task, "agent": args.agent, "precision": args.precision,
        "precision_resolved": agent.precision, "machine": describe("cpu"), "episodes": args.episodes,
        "workers": args.workers, "fast_render": args.fast_render, "seconds_one_env": round(best_one, 2),
        "seconds_workers": round(best_workers, 2), "speedup": round(best_one / best_workers, 2),
        "frames_per_eval": frames,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
