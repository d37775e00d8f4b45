"""End-to-end training speed: frames/s of the real trainer after the seed phase.

    python bench/e2e.py [--task cartpole_swingup] [--agent drqv2] [--precision auto] [--frames 2000]
                        [--device auto] [--async-env true] [--num-threads auto] [--compile none]
                        [--cuda-graphs auto|on|off] [--side-by-side] [override ...]

Runs drq's trainer (train.py's code path, composed from cfgs/ with the task's published settings: for
cartpole_swingup DrQ-v2's action repeat 2, batch 256, nstep 3, an update every 2 agent steps, 4000 seed frames) for
the seed phase plus ``--frames`` frames, with evaluation only at frame 0 (1 episode) and videos, snapshots and wandb
off. Frames/s is measured between the first and the last health log after the seed phase, from the run's own
metrics.jsonl (frame and wall time of each log line), so compilation and CUDA-graph capture (first updates) are not
counted. ``--cuda-graphs auto`` turns them on when the device is CUDA. Extra arguments are hydra overrides
(``batch_size=128``). ``--frames`` and ``--log-every-frames`` are rounded up to multiples of the action repeat in force
(``preset=debug``: 8; ``--agent sac``: DrQ's per-domain action repeat, cartpole 8), as the config requires of every
frame count; a line on stderr and the JSON's ``rounded_to_action_repeat`` (``{name: [asked, used]}``) say when. A bad
override is one line and exit 2, before anything runs.

Last line: one JSON object with frames_per_s, updates_per_s, env_ms_per_step (one synchronous step: physics over the
action repeat + one 84x84 render, measured separately), task, agent, device, precision and the settings used, and
``breakdown``: where the training loop's wall time went after the seed phase, in ms per agent step -- ``env_wait``
(``step_wait``: waiting for the env worker's physics + render), ``update`` (``agent.update``), ``sample``
(``replay.sample``), ``act`` (``agent.act``), ``other`` (the rest: replay adds, logging) -- and ``bottleneck``, the
largest of them. Evaluation is not counted.

``--side-by-side`` (only when asked; our figure is always printed) then runs the same loop a second time in
facebookresearch/drqv2's published setup: its update as its code writes it (``tests/reference/updates.py``, the plain
reference the transcription tests and ``bench/update.py`` use: float frames, replicate pad + crop, NCHW, fp32, separate
Adam optimisers, the run's layer sizes; DrQ's SAC update
for ``--agent sac``), fp32 without autocast, and the environment stepped in the training process (no env worker).
The JSON then gains ``reference`` (the same fields for that run) and ``speedup`` (ours / reference frames/s, one
run each, back to back). What it does not reproduce: drqv2's replay (episodes saved as .npz files, read by 4 loader
workers; ours samples in-process) and its logging; the update and the environment are where the time goes. On CUDA each timed part ends with ``torch.cuda.synchronize()`` so that
GPU work is charged to the part that queued it (``--breakdown false`` leaves the loop untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drq.machine.process_tuning import tune_process  # noqa: E402

tune_process()  # before torch: huge pages, passive OpenMP waiting, glibc keeping freed memory (as train.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from drq.speed.compiling import COMPILE_MODES  # noqa: E402
from drq.speed.cuda_graphs import GRAPH_CHOICES, cuda_graphs_wanted  # noqa: E402
from drq.speed.hardware import describe  # noqa: E402

sys.path.append(str(ROOT / "bench"))  # last: bench/replay.py must not shadow the replay package
from bench_config import compose, compose_or_exit, exit_on_bad_config, round_up, rounding_note  # noqa: E402


def env_ms_per_step(cfg: dict, steps: int = 60) -> float:
    from drq.envs.pixels import make_env

    env = make_env(task=cfg["task_name"], frame_stack=cfg["frame_stack"], action_repeat=cfg["action_repeat"], seed=0,
                   size=cfg["image_size"], fast_render=cfg["fast_render"])  # fmt: skip
    import numpy as np

    env.reset()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        ts = env.step(rng.uniform(-1, 1, env.action_shape).astype(np.float32))
        if ts.last:
            env.reset()
    ms = (time.perf_counter() - t0) / steps * 1e3
    env.close()
    return ms


def throughput(metrics_jsonl: Path, after_frame: int, update_every_steps: int) -> tuple[float, float, int]:
    lines = [json.loads(x) for x in metrics_jsonl.read_text().splitlines() if x.strip()]
    health = [x for x in lines if x["section"] == "health" and x["frame"] > after_frame]
    if len(health) < 2:
        raise SystemExit(f"bench/e2e.py: too few health logs after frame {after_frame} in {metrics_jsonl}; "
                         "raise --frames")  # fmt: skip
    first, last = health[0], health[-1]
    seconds = last["total_time"] - first["total_time"]
    frames = last["frame"] - first["frame"]
    updates = (last["step"] - first["step"]) / update_every_steps
    return frames / seconds, updates / seconds, frames


class LoopTimer:
    """Wall time of the trainer loop's parts after the seed phase, by wrapping the trainer's own objects' methods."""

    PARTS = ("env_wait", "update", "sample", "act")

    def __init__(self, tr, seed_frames: int, sync_cuda: bool) -> None:
        self.tr, self.seed_frames, self.sync_cuda = tr, seed_frames, sync_cuda
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0
        self.paused = False
        self._wrap(tr.train_env, "step_wait", "env_wait")
        self._wrap(tr.agent, "update", "update")
        self._wrap(tr.replay, "sample", "sample")
        self._wrap(tr.agent, "act", "act")
        evaluate = tr.evaluate

        def untimed_evaluate(*a, **k):
            self.paused = True
            try:
                return evaluate(*a, **k)
            finally:
                self.paused = False

        tr.evaluate = untimed_evaluate

    def _wrap(self, obj, attr: str, part: str) -> None:
        fn = getattr(obj, attr)

        def timed(*a, **k):
            if self.paused or self.tr.frame < self.seed_frames:
                return fn(*a, **k)
            t0 = time.perf_counter()
            if self.start is None:
                self.start = t0
            out = fn(*a, **k)
            if self.sync_cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            self.seconds[part] += t1 - t0
            if part == "env_wait":  # the last call of an agent step
                self.steps += 1
                self.end = t1
            return out

        setattr(obj, attr, timed)

    def report(self) -> dict:
        if not self.steps or self.start is None or self.end is None:
            return {}
        ms = {k: round(v / self.steps * 1e3, 3) for k, v in self.seconds.items()}
        loop_ms = (self.end - self.start) / self.steps * 1e3
        ms["other"] = round(max(loop_ms - sum(self.seconds.values()) / self.steps * 1e3, 0.0), 3)
        return {"breakdown_ms_per_step": ms, "loop_ms_per_step": round(loop_ms, 3), "timed_steps": self.steps,
                "bottleneck": max(ms, key=ms.get)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole_swingup")
    p.add_argument("--agent", default="drqv2", choices=["drqv2", "sac"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--frames", type=int, default=2000,
                   help="frames measured after the seed phase (rounded up to the action repeat in force)")
    p.add_argument("--device", default="auto")
    p.add_argument("--async-env", default="true", choices=["true", "false"])
    p.add_argument("--num-threads", default="auto")
    p.add_argument("--log-every-frames", type=int, default=200,
                   help="health log interval in frames (rounded up to the action repeat in force)")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES)
    p.add_argument("--cuda-graphs", default="auto", choices=GRAPH_CHOICES)
    p.add_argument("--breakdown", default="true", choices=["true", "false"],
                   help="time the loop's parts (env wait, update, sample, act) after the seed phase")
    p.add_argument("--side-by-side", action="store_true",
                   help="also run facebookresearch/drqv2's published setup (plain eager fp32 update, env in process)")
    p.add_argument("overrides", nargs="*", help="extra hydra overrides, e.g. batch_size=128")
    return p


def run_config(args: argparse.Namespace, extra: list[str] = ()) -> tuple[dict, dict[str, list[int]]]:
    """The trainer config this bench runs (composed from cfgs/ as train.py composes it, then ``extra`` overrides),
    and ``{name: [asked, used]}`` for the frame counts it rounded up to the action repeat in force.

    ``--frames`` and ``--log-every-frames`` are rounded up to multiples of ``action_repeat`` (frames per agent step),
    then ``num_train_frames`` = seed frames + frames + one log interval and ``eval_every_frames`` = 10 x that (only
    the evaluation at frame 0), so every count the bench composes is a multiple of the action repeat. A
    ``log_every_frames=`` override is the user's own value: kept as it is and checked like any other."""
    graphs = cuda_graphs_wanted(args.cuda_graphs, args.device)
    base = [f"task={args.task}", f"agent={args.agent}", f"precision={args.precision}", f"device={args.device}",
            f"async_env={args.async_env}", f"num_threads={args.num_threads}", "save_video=false",
            "save_snapshot=false", "wandb.mode=disabled", "num_eval_episodes=1", "resume=never",
            f"compile={args.compile}", f"cuda_graphs={str(graphs).lower()}"]  # fmt: skip
    cfg = compose(base + list(args.overrides) + list(extra))
    ours = {"frames": args.frames}
    if not any(o.split("=", 1)[0].lstrip("+") == "log_every_frames" for o in args.overrides):
        ours["log_every_frames"] = args.log_every_frames
    repeat = int(cfg["action_repeat"])
    counts, rounded = round_up(ours, repeat)
    cfg["log_every_frames"] = counts.get("log_every_frames", cfg["log_every_frames"])
    # a multiple already unless the user's own num_seed_frames= or log_every_frames= is not (reported by the check)
    total = round_up({"num_train_frames": int(cfg["num_seed_frames"]) + counts["frames"] + cfg["log_every_frames"]},
                     repeat)[0]["num_train_frames"]
    cfg["num_train_frames"] = total
    cfg["eval_every_frames"] = 10 * total  # only the eval at frame 0 (before the seed phase)
    return cfg, rounded


def main() -> None:
    args = build_parser().parse_args()
    graphs = cuda_graphs_wanted(args.cuda_graphs, args.device)
    cfg, rounded = compose_or_exit("bench/e2e.py", lambda: run_config(args))
    exit_on_bad_config("bench/e2e.py", cfg)
    if rounded:
        print(rounding_note("bench/e2e.py", rounded, cfg["action_repeat"]), file=sys.stderr)
    seed_frames = int(cfg["num_seed_frames"])

    env_ms = env_ms_per_step(cfg)
    ours = measure(cfg, seed_frames, args.breakdown == "true")
    out = {"task": cfg["task_name"], "agent": args.agent, "device": ours["device"], "precision": args.precision,
           **ours, "env_ms_per_step": round(env_ms, 2), "compile": args.compile, "cuda_graphs": graphs,
           "seed_frames": seed_frames, "action_repeat": cfg["action_repeat"], "batch_size": cfg["batch_size"],
           "nstep": cfg["nstep"], "async_env": cfg["async_env"], "num_train_frames": cfg["num_train_frames"],
           "log_every_frames": cfg["log_every_frames"], "rounded_to_action_repeat": rounded,
           "overrides": args.overrides}  # fmt: skip
    if args.side_by_side:
        ref_cfg = run_config(args, ["async_env=false", "precision=fp32", "compile=none", "cuda_graphs=false"])[0]
        out["reference"] = {"setup": "facebookresearch/drqv2 published: plain eager update "
                                     "(tests/reference/updates.py), fp32, env in the training process",
                            **measure(ref_cfg, seed_frames, args.breakdown == "true", reference=True)}  # fmt: skip
        out["speedup"] = round(out["frames_per_s"] / out["reference"]["frames_per_s"], 2)
    print(json.dumps(out))


def reference_update(tr) -> Callable:
    """``tr.agent.update`` replaced by the plain eager update of facebookresearch/drqv2 (DrQ for SAC), on the same
    replay batches; the trainer's health lines get our agent's metric names (from one update of ours, at the first
    call) so the loop runs unchanged."""
    from tests.reference.updates import DrQReference, DrQV2Reference  # noqa: E402  (the tests' plain reference)

    c, action_dim = tr.cfg, int(np.prod(tr.action_shape))
    sizes = dict(obs_shape=tr.agent.obs_shape, action_dim=action_dim, feature_dim=c.agent.feature_dim,
                 hidden_dim=c.agent.hidden_dim, lr=c.agent.lr, tau=c.agent.critic_target_tau, device=tr.device)
    if c.agent.name == "sac":
        plain = DrQReference(**sizes, init_temperature=c.agent.init_temperature,
                             target_encoder=c.agent.target_encoder)
    else:
        plain = DrQV2Reference(**sizes, std=0.5, stddev_clip=c.agent.stddev_clip)
    ours, template = tr.agent.update, {}

    def update(batch, step):
        if not template:
            template.update({k: v.detach() for k, v in ours(batch, step).items()})
        for value in plain.update(batch, step).values():
            value.item()  # read on the host, as the papers' code logs them
        return template

    return update


def measure(cfg: dict, seed_frames: int, breakdown: bool, reference: bool = False) -> dict:
    """Train for ``cfg``'s frames in a temporary run dir; frames/s and updates/s after the seed phase."""
    from drq.run import trainer

    with tempfile.TemporaryDirectory(prefix="drq_e2e_") as run_dir:
        t0 = time.perf_counter()
        done = trainer.Trainer(cfg, run_dir, say=lambda s: print(s, file=sys.stderr))
        if reference:
            done.agent.update = reference_update(done)
        timer = LoopTimer(done, seed_frames, sync_cuda=str(done.device).startswith("cuda")) if breakdown else None
        done.train()
        wall = time.perf_counter() - t0
        fps, ups, measured = throughput(Path(run_dir) / "metrics.jsonl", seed_frames, done.update_every_steps)
    return {"device": str(done.device), "precision_resolved": done.precision_resolved,
            "machine": describe(done.device), "frames_per_s": round(fps, 2), "updates_per_s": round(ups, 3),
            "measured_frames": measured, "wall_s": round(wall, 1), "update_every_steps": done.update_every_steps,
            "torch_threads": done.num_threads, **(timer.report() if timer is not None else {})}  # fmt: skip


if __name__ == "__main__":
    main()
