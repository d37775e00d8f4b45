"""Replay memory and sampling speed.

    python bench/replay.py [--capacity 100000] [--size 84] [--frame-stack 3] [--nstep 3] [--batch-size 256]

Fills a FrameReplay to capacity with 500-step episodes (walker_walk at action repeat 2) of random frames, then
times `sample(batch_size)`. Last line: one JSON object with
  bytes_per_transition  storage bytes / capacity (frames + metadata)
  drqv2_bytes_per_transition  what facebookresearch/drqv2 keeps per transition (one stacked obs per step)
  sample_ms             median wall time of one sample() call, and sample_ms_p90
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from drq.machine.process_tuning import tune_process  # noqa: E402

tune_process()  # before torch: huge pages, passive OpenMP waiting, glibc keeping freed memory (as train.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from replay import FrameReplay  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--size", type=int, default=84)
    p.add_argument("--frame-stack", type=int, default=3)
    p.add_argument("--nstep", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--episode-steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    buf = FrameReplay(args.capacity, (3, args.size, args.size), (args.action_dim,), frame_stack=args.frame_stack,
                      nstep=args.nstep, discount=0.99, device=args.device)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(64, 3, args.size, args.size), dtype=np.uint8)
    action = np.zeros(args.action_dim, np.float32)
    t0 = time.perf_counter()
    for i in range(buf.num_slots):
        t = i % (args.episode_steps + 1)
        buf.add(pool[i % 64], action, 1.0, 1.0, first=t == 0, last=t == args.episode_steps)
    fill_s = time.perf_counter() - t0

    for _ in range(5):
        buf.sample(args.batch_size)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batch = buf.sample(args.batch_size)
        if batch.obs.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    stack_bytes = args.frame_stack * 3 * args.size * args.size
    result = {
        "capacity": args.capacity,
        "size": args.size,
        "frame_stack": args.frame_stack,
        "nstep": args.nstep,
        "batch_size": args.batch_size,
        "device": str(buf.device),
        "bytes_per_transition": round(buf.nbytes / args.capacity, 1),
        "drqv2_bytes_per_transition": stack_bytes,
        "sampleable_transitions": len(buf),
        "add_us": round(fill_s / buf.num_slots * 1e6, 2),
        "sample_ms": round(float(np.median(times)), 3),
        "sample_ms_p90": round(float(np.percentile(times, 90)), 3),
    }
    from drq.speed.hardware import describe

    result["machine"] = describe(buf.device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
