"""A run's evaluation returns next to DrQ-v2's published ones at the same frames (walker_walk by default).

    python bench/gpu/compare_curve.py RUN_DIR_OR_EVAL_CSV [--reference CSV] [--wall-s S] [--train-rc RC]

RUN_DIR: a trainer run folder (eval.csv and metrics.jsonl) or an eval.csv. The reference CSV is DrQ-v2's curves file
(columns frame, episode_reward, seed; one row per seed and evaluation, every 20k frames): for each of our evaluations
it gives the seeds' mean, min and max return at the nearest reference frame at or below ours. A missing reference
file is reported, not an error (the GPU machine has none: run this again here on the returned eval.csv). Prints one
JSON line: frames, last/best eval return, training frames/s (from metrics.jsonl, after the seed phase), and the rows.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--reference", default=None)
    ap.add_argument("--wall-s", type=float, default=None)
    ap.add_argument("--train-rc", type=int, default=None)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run = Path(args.run)
    eval_csv = run if run.suffix == ".csv" else run / "eval.csv"
    out: dict = {"part": "learn", "run": str(run), "wall_s": args.wall_s, "train_rc": args.train_rc}
    if not eval_csv.exists():
        out.update(ok=False, error=f"no eval.csv at {eval_csv}")
        print(json.dumps(out))
        return
    evals = [(int(float(r["frame"])), float(r["episode_reward"])) for r in read_csv(eval_csv) if r.get("episode_reward")]
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        health = [x for x in lines if x.get("section") == "health"]
        if len(health) >= 2:
            a, b = health[0], health[-1]
            out["frames_per_s_after_seed"] = round((b["frame"] - a["frame"]) / max(b["total_time"] - a["total_time"],
                                                                                  1e-9), 1)
            out["frames"] = b["frame"]
    out.update(ok=bool(evals), evals=len(evals), last_eval_return=evals[-1][1] if evals else None,
               best_eval_return=max(r for _, r in evals) if evals else None)
    ref_path = Path(args.reference) if args.reference else None
    rows = []
    if ref_path is not None and ref_path.exists():
        by_frame: dict[int, list[float]] = defaultdict(list)
        for r in read_csv(ref_path):
            by_frame[int(float(r["frame"]))].append(float(r["episode_reward"]))
        frames = sorted(by_frame)
        for frame, ours in evals:
            at = max((f for f in frames if f <= frame), default=None)
            if at is None:
                continue
            vals = by_frame[at]
            rows.append({"frame": frame, "ours": round(ours, 1), "ref_frame": at,
                         "ref_mean": round(sum(vals) / len(vals), 1), "ref_min": round(min(vals), 1),
                         "ref_max": round(max(vals), 1), "ref_seeds": len(vals)})
        out["reference"] = str(ref_path)
    else:
        out["reference"] = f"not found: {ref_path} (compare later: python bench/gpu/compare_curve.py eval.csv " \
                           "--reference ../shared/reference/drqv2_curves/dmc_walker_walk.csv)"
    out["vs_reference"] = rows
    print(json.dumps(out))


if __name__ == "__main__":
    main()
