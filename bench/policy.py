"""Latency of a deployed policy: milliseconds per action on the CPU, eager (``drq.load_policy``), TorchScript and
ONNX Runtime, at batch 1 (a robot loop) and batch 32, each with 1 and 2 threads; and the time ``drq.load_policy``
takes in a fresh process.

    python bench/policy.py [--calls 500] [--batch-calls 50] [--threads 1,2] [--agent drqv2]

Walker's networks (DrQ-v2's published sizes): 84x84 pictures, frame stack 3, feature_dim 50, hidden_dim 1024, A = 6,
random weights (the time does not depend on them). The agent is saved as a snapshot with the optimisers' state after
one update (as large as a real one) and a walker_walk config, loaded with ``drq.load_policy`` and exported with
``drq.export`` to both formats. Each path is timed call by call (``time.perf_counter``) after 20 warm-up calls:
``--calls`` calls at batch 1, ``--batch-calls`` at batch 32, on random uint8 observations:

- ``eager``: ``policy.act_on_observation(obs)`` (numpy in, numpy out; ``torch.inference_mode``), and
  ``eager_picture`` at batch 1: ``policy.act(picture)`` on a 120x160 picture (the resize and the frame stack included);
- ``torchscript``: the exported frozen module from ``torch.jit.load`` on ``torch.from_numpy(obs)``;
- ``onnxruntime``: an ``InferenceSession`` of the exported file (``ORT_ENABLE_ALL``, ``intra_op_num_threads`` = the
  threads), ``session.run`` on the numpy observation.

torch's threads are set with ``torch.set_num_threads``. The process is not tuned (``drq.machine.process_tuning``
is the trainer's): this is a user's robot loop, as it would run. Keys: ``<path>/batch<B>/threads<T>`` with
``p50_ms`` / ``p99_ms`` per call and ``p50_ms_per_action`` / ``p99_ms_per_action`` (per call / B); ``fastest_batch1``
names the path with the lowest p99 at batch 1. ``load``: ``torch_import_s`` and ``load_policy_s`` (median of 3 fresh
processes, torch imported before the clock starts), ``snapshot_bytes``. The last line is one JSON object with the
``machine`` and the load average while it ran (other work on the machine makes the tails longer).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OBS_SHAPE, ACTION_DIM, BATCH = (9, 84, 84), 6, 32


def walker_snapshot(run_dir: Path, agent_name: str) -> int:
    """A walker-sized agent with random weights and one update's optimiser state, saved as ``run_dir/snapshot.pt``
    with walker_walk's config and env record (as the trainer writes it). Returns the file's size in bytes."""
    import numpy as np
    import torch

    from drq.agents import make_agent
    from drq.config import schema as config_schema
    from drq.run import provenance
    from drq.run import snapshot as snapshots

    config = config_schema.defaults(agent_name)  # walker_walk, 84x84, frame stack 3, feature_dim 50, hidden_dim 1024
    agent = make_agent(agent_name, OBS_SHAPE, (ACTION_DIM,), "cpu", "fp32",
                       **{k: v for k, v in config["agent"].items() if k != "name"})  # fmt: skip

    class Batch:
        obs = torch.randint(0, 256, (8, *OBS_SHAPE), dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (8, *OBS_SHAPE), dtype=torch.uint8)
        action = torch.rand(8, ACTION_DIM) * 2 - 1
        reward, discount = torch.rand(8, 1), torch.ones(8, 1)

    agent.update(Batch(), 10_000)  # the optimisers' moments exist, as in a real snapshot
    env = provenance.env_record(config, OBS_SHAPE, -np.ones(ACTION_DIM), np.ones(ACTION_DIM))
    snapshots.save(run_dir / snapshots.FILENAME, {"config": config, "agent": agent.state_dict(), "replay": None,
                                                  "counters": {"step": 10_000, "frame": 20_000}, "env": env,
                                                  "provenance": [provenance.session("cpu", "fp32", "bench", 1, None)]})
    return (run_dir / snapshots.FILENAME).stat().st_size


LOAD_SCRIPT = """
import json, sys, time
start = time.perf_counter(); import torch; torch_s = time.perf_counter() - start
start = time.perf_counter(); import drq; policy = drq.load_policy(sys.argv[1]); load_s = time.perf_counter() - start
print(json.dumps({"torch_import_s": torch_s, "load_policy_s": load_s}))
"""


def load_times(run_dir: Path, repeats: int = 3) -> dict[str, float]:
    """``import torch`` and ``drq.load_policy`` in fresh interpreters: the median of ``repeats``."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(run_dir)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}


def timed(call: Callable[[], Any], calls: int, batch: int, threads: int) -> dict[str, Any]:
    """p50 / p99 milliseconds of ``calls`` calls of ``call`` after 20 untimed ones."""
    import numpy as np

    for _ in range(20):
        call()
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    p50, p99 = (float(np.percentile(times, q)) * 1e3 for q in (50, 99))
    return {"batch": batch, "threads": threads, "calls": calls, "p50_ms": round(p50, 4), "p99_ms": round(p99, 4),
            "p50_ms_per_action": round(p50 / batch, 4), "p99_ms_per_action": round(p99 / batch, 4)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=500, help="timed calls at batch 1 per path and thread count")
    p.add_argument("--batch-calls", type=int, default=50, help="timed calls at batch 32")
    p.add_argument("--threads", default="1,2", help="thread counts to time, comma-separated")
    p.add_argument("--agent", default="drqv2", choices=["drqv2", "sac"])
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    import numpy as np
    import onnxruntime
    import torch

    import drq
    from drq import export
    from drq.speed.hardware import describe

    results: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="drq-bench-policy-") as tmp:
        run_dir = Path(tmp)
        snapshot_bytes = walker_snapshot(run_dir, args.agent)
        load = {**load_times(run_dir), "snapshot_bytes": snapshot_bytes}
        policy = drq.load_policy(run_dir)
        parity = {fmt: export.export(run_dir, fmt)["parity_max_abs_diff"] for fmt in export.FORMATS}
        scripted = torch.jit.load(str(run_dir / "policy.pt"))
        picture = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        for batch, calls in ((1, args.calls), (BATCH, args.batch_calls)):
            obs = rng.integers(0, 256, (batch, *OBS_SHAPE), dtype=np.uint8)
            for n in threads:
                torch.set_num_threads(n)
                eager = timed(lambda: policy.act_on_observation(obs), calls, batch, n)
                results[f"eager/batch{batch}/threads{n}"] = eager
                if batch == 1:
                    policy.reset()
                    results[f"eager_picture/batch1/threads{n}"] = timed(lambda: policy.act(picture), calls, 1, n)

                def run_scripted() -> np.ndarray:
                    with torch.inference_mode():
                        return scripted(torch.from_numpy(obs)).numpy()

                results[f"torchscript/batch{batch}/threads{n}"] = timed(run_scripted, calls, batch, n)
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = n, 1
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = onnxruntime.InferenceSession(str(run_dir / "policy.onnx"), options,
                                                       providers=["CPUExecutionProvider"])  # fmt: skip
                results[f"onnxruntime/batch{batch}/threads{n}"] = timed(
                    lambda: session.run(["action"], {"observation": obs}), calls, batch, n)
    batch1 = {k: v for k, v in results.items() if v["batch"] == 1 and not k.startswith("eager_picture")}
    fastest = min(batch1, key=lambda k: batch1[k]["p99_ms"])
    for key, value in results.items():
        print(f"{key:32s} p50 {value['p50_ms_per_action']:8.3f} ms/action   p99 {value['p99_ms_per_action']:8.3f}")
    print(json.dumps({"bench": "policy", "agent": args.agent, "observation": list(OBS_SHAPE), "action_dim": ACTION_DIM,
                      "feature_dim": 50, "hidden_dim": 1024, **results, "fastest_batch1": fastest,
                      "export_parity_max_abs_diff": parity, "load": load, "load_average": os.getloadavg(),
                      "onnxruntime": onnxruntime.__version__, "machine": describe("cpu")}))  # fmt: skip


if __name__ == "__main__":
    main()
