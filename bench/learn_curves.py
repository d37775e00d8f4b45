"""One figure of ``bench/learn.py`` runs: each run's evaluation returns against frames, one panel per run.

    python bench/learn_curves.py RESULT.json [RESULT.json ...] --out curves.png

Each ``RESULT.json`` is the JSON line ``bench/learn.py`` printed (its ``run_dir`` holds the ``eval.csv`` drawn); the
panel draws the run's target and the random policy's and the zero action's returns beside its curve, and the title
names the machine the JSON recorded. Frames = agent steps x action_repeat, the x axis of every drq figure. Prints one
JSON line: the figure's path and each run's task, frames, minutes and final return.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drq.analysis.report import read_eval_csv  # noqa: E402  (last rows win where a resume evaluated a frame again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench/learn.py's JSON line, one file per run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(path.read_text().strip().splitlines()[-1]) for path in args.results]
    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.6), squeeze=False)
    for ax, result in zip(axes[0], results):
        frames, returns = read_eval_csv(Path(result["run_dir"]) / "eval.csv")
        label = f"{result['agent']} ({result['precision_resolved']}, seed {result['seed']})"
        ax.plot(frames, returns, marker="o", ms=3, label=label)
        for value, style, label in ((result["target"], "--", "target"),
                                    (result.get("random_policy_return"), ":", "random policy"),
                                    (result.get("zero_action_return"), "-.", "zero action")):  # fmt: skip
            if value is not None:
                ax.axhline(value, ls=style, color="gray", lw=1, label=f"{label} ({value:g})")
        minutes = result["minutes"]
        ax.set_title(f"{result['task']}\n{result['frames']:,} frames in {minutes:.1f} min", fontsize=9)
        ax.set_xlabel("frames")
        ax.set_ylabel("mean evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    machine = results[0]["machine"]
    fig.suptitle(f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
                 f"(CPU capability {machine['torch_cpu_capability']}), no GPU", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    keys = ("task", "frames", "minutes", "final_eval_return")
    print(json.dumps({"figure": str(args.out), "runs": [{k: r[k] for k in keys} for r in results]}))


if __name__ == "__main__":
    main()
