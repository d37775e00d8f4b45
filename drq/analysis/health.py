"""``python -m drq.analysis.health RUN_DIR``: the offline health report of one run.

Reads ``RUN_DIR/metrics.jsonl`` (and, for the action repeat, discount, agent and |A|, ``RUN_DIR/run.json``'s ``run``
record; a run dir from before it: ``RUN_DIR/.hydra/config.yaml``, without |A|),
runs the detector of ``drq.run.health`` on the records, writes ``RUN_DIR/health.png`` (grouped panels, x axis in
**frames**, and a verdict panel) and prints one verdict per signal, and the run's environment restarts (its
``restart`` lines: dotted lines on the eval-return panel, a count per env). The reading guide is docs/health.md.

Exit status: 0 when the report is written (1 with ``--strict`` and a problem found); 2, with one message on stderr
and no traceback, when the run directory cannot be read.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drq.run.health import AGENTS, THRESHOLDS, HealthThresholds, RunContext, Verdict, as_float, diagnose, make_context


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ----------------------------------------------------------------------------------------------- run dir I/O


class HealthInputError(ValueError):
    """The run directory cannot be read (missing or empty metrics file, malformed line)."""


def load_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a metrics.jsonl: one JSON object per line (NaN/Infinity tokens and null allowed).

    A torn last line (a run killed mid-write) is skipped; a malformed line elsewhere raises HealthInputError.
    """
    path = Path(path)
    if not path.is_file():
        raise HealthInputError(f"no metrics file at {path} (expected the run directory's metrics.jsonl)")
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise HealthInputError(f"{path} line {number} is not JSON: {err}") from None
        if not isinstance(record, dict):
            raise HealthInputError(f"{path} line {number} is not a JSON object")
        records.append(record)
    if not any(r.get("section") == "health" for r in records):
        raise HealthInputError(f"{path} has no health lines (records with \"section\": \"health\"); "
                               "the run may not have reached its first update yet")
    return records


def read_run_config(run_dir: Path) -> dict:
    """The run's agent, |A| (``action_dim``), action repeat and discount, from run.json's ``run`` record (written by the
    trainer, :func:`drq.run.provenance.run_record`). A run dir from before that record: the same from hydra's
    ``.hydra/config.yaml``, without |A| (SAC's ``target_entropy`` gives it, or ``--action-dim``); {} when neither
    can be read."""
    from drq.run import provenance  # json and the standard library only

    run = provenance.read_run(run_dir)
    if not run:
        run = _read_hydra_config(run_dir / ".hydra" / "config.yaml")
    out = {key: run[key] for key in ("action_repeat", "discount", "action_dim")
           if isinstance(run.get(key), (int, float)) and not isinstance(run.get(key), bool)}  # fmt: skip
    if run.get("agent") in AGENTS:
        out["agent"] = run["agent"]
    return out


def _read_hydra_config(path: Path) -> dict:
    """Best effort, for run dirs from before run.json's ``run`` record: action_repeat, discount, agent; {} if
    unreadable."""
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text()) or {}
    except Exception:  # no file, or a config we cannot parse: it only costs us the defaults
        return {}
    if not isinstance(cfg, dict):
        return {}
    agent = cfg.get("agent")
    return {"action_repeat": cfg.get("action_repeat"), "discount": cfg.get("discount"),
            "agent": agent.get("name") if isinstance(agent, dict) else None}  # fmt: skip


def restarts_line(records: Sequence[Mapping[str, object]]) -> str:
    """The run's environment restarts in words (its ``restart`` lines, written by ``drq.run.restarts``): ``'none'``,
    or how many per env and the last one's frame and reason."""
    restarts = [r for r in records if r.get("section") == "restart"]
    if not restarts:
        return "none"
    per_env: dict[str, int] = {}
    for r in restarts:
        per_env[str(r.get("env"))] = per_env.get(str(r.get("env")), 0) + 1
    counts = ", ".join(f"{env}: {n}" for env, n in per_env.items())
    last = restarts[-1]
    return f"{len(restarts)} ({counts}); the last at frame {int(last['frame']):,}: {last.get('reason')}"


def infer_agent(records: Sequence[Mapping[str, float]]) -> str:
    """SAC logs alpha and target_entropy; DrQ-v2 does not."""
    return "sac" if any("alpha" in r or "target_entropy" in r for r in records) else "drqv2"


# ----------------------------------------------------------------------------------------------- report figure

# (title, metrics plotted, y label); the same grouping as the wandb dashboard (drq.analysis.dashboard)
PANELS = (
    ("log-prob & entropy vs target", ("actor_logprob", "actor_entropy", "target_entropy"), "nats (sum over dims)"),
    ("alpha (SAC temperature)", ("alpha",), "alpha"),
    ("saturation & Jacobian", ("actor_saturation", "actor_log_det_jacobian"), "fraction of dims with |a| > 0.99"),
    ("policy std", ("actor_std",), "std"),
    ("Q values", ("critic_q1", "critic_q2", "critic_target_q"), "batch mean Q"),
    ("grad norms", ("encoder_grad_norm", "actor_grad_norm", "critic_grad_norm"), "L2 norm"),
    ("eval return", ("episode_reward",), "mean episode return"),
)
_PANEL_SIGNAL = {"log-prob & entropy vs target": ("log_prob", "entropy"), "policy std": ("entropy",),
                 "saturation & Jacobian": ("saturation",), "Q values": ("q_values",)}


def write_report_png(records: Sequence[Mapping[str, float]], verdicts: Mapping[str, Verdict], ctx: RunContext,
                     out: str | Path, title: str = "", thresholds: HealthThresholds = THRESHOLDS) -> Path:
    """Draw the grouped panels (x: frames) and a verdict panel into a PNG; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    health = [r for r in records if r.get("section") == "health"]
    evals = [r for r in records if r.get("section") == "eval"]
    fig = Figure(figsize=(22, 10), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4).ravel()

    def xy(rows: Sequence[Mapping[str, float]], name: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(r.get("frame", i), as_float(r.get(name))) for i, r in enumerate(rows) if name in r]
        if not pts:
            return np.zeros(0), np.zeros(0)
        f, v = zip(*pts)
        return np.asarray(f, dtype=float), np.asarray(v, dtype=float)

    for ax, (panel_title, names, ylabel) in zip(axes, PANELS):
        rows = evals if panel_title == "eval return" else health
        drawn = 0
        for name in names:
            f, v = xy(rows, name)
            if f.size == 0:
                continue
            style = "--" if name == "target_entropy" else "-"
            target_ax = ax
            if name == "actor_log_det_jacobian":
                target_ax = ax.twinx()
                target_ax.set_ylabel("log-det-Jacobian (sum over dims)", color="tab:red")
                target_ax.plot(f, v, style, color="tab:red", label=name)
                target_ax.legend(loc="lower right", fontsize=8)
            else:
                target_ax.plot(f, v, style, label=name, marker="o" if rows is evals else None, markersize=3)
            drawn += 1
        if panel_title == "Q values":
            bound = thresholds.q_bound_margin * ctx.q_theory_max(thresholds)
            q_max = max((np.nanmax(np.abs(xy(rows, n)[1]), initial=0.0) for n in names), default=0.0)
            if q_max > 0.25 * bound:  # otherwise the line would squash the curves: say it in words
                ax.axhline(bound, color="gray", ls=":", label=f"divergence bound {bound:.0f}")
            else:
                ax.text(0.99, 0.98, f"divergence bound {bound:.0f} (off scale)", ha="right", va="top",
                        transform=ax.transAxes, color="gray", fontsize=8)
        if panel_title in ("alpha (SAC temperature)", "grad norms") and drawn:
            ax.set_yscale("log")
        if not drawn:
            why = "DrQ-v2 has no alpha: its std is scheduled" if panel_title.startswith("alpha") else "not logged"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray")
        if panel_title == "eval return":
            for i, frame in enumerate(r["frame"] for r in records if r.get("section") == "restart"):
                ax.axvline(frame, color="gray", ls=":", lw=1, label="env restart" if i == 0 else None)
                drawn += i == 0
        for signal in _PANEL_SIGNAL.get(panel_title, ()):
            verdict = verdicts.get(signal)
            if verdict is not None and verdict.frame is not None:
                ax.axvline(verdict.frame, color="red", ls="--", lw=1)
        ax.set_title(panel_title)
        ax.set_xlabel("frame")
        ax.set_ylabel(ylabel)
        if drawn:
            ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)

    text_ax = axes[-1]
    text_ax.axis("off")
    lines = [f"agent {ctx.agent}, |A| = {ctx.action_dim or '?'}, action repeat {ctx.action_repeat}, "
             f"discount {ctx.discount}", ""]
    for signal, verdict in verdicts.items():
        lines.append(f"{signal}: {verdict.status.upper() if not verdict.ok else verdict.status}")
        lines.append(_wrap(verdict.detail, 60))
    lines += ["env restarts:", _wrap(restarts_line(records), 60)]
    text_ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8,
                 transform=text_ax.transAxes)
    text_ax.set_title("verdicts")
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return out


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], "  "
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line)
            line = "  "
        line += word + " "
    lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drq.analysis.health RUN_DIR``. Exit status: 0 report written (1 with --strict and a problem found),
    2 when the run directory cannot be read (one message on stderr, no traceback)."""
    parser = argparse.ArgumentParser(prog="python -m drq.analysis.health", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory holding metrics.jsonl")
    parser.add_argument("--out", help="PNG path (default RUN_DIR/health.png)")
    parser.add_argument("--agent", choices=AGENTS, help="default: from run.json, else from the metrics")
    parser.add_argument("--action-dim", type=int, help="|A| (default: from run.json; SAC: from target_entropy)")
    parser.add_argument("--action-repeat", type=int, help="for the Q bound (default: run.json, else "
                        f"{THRESHOLDS.default_action_repeat})")
    parser.add_argument("--discount", type=float, help="for the Q bound (default: run.json, else "
                        f"{THRESHOLDS.default_discount})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any signal reports a problem")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir)
    try:
        if not run_dir.is_dir():
            raise HealthInputError(f"no run directory at {run_dir}")
        records = load_metrics(run_dir / "metrics.jsonl")
        cfg = read_run_config(run_dir)
        agent = args.agent or cfg.get("agent") or infer_agent([r for r in records if r.get("section") == "health"])
        run = dict(action_dim=args.action_dim or cfg.get("action_dim"),
                   action_repeat=args.action_repeat or cfg.get("action_repeat"),
                   discount=args.discount if args.discount is not None else cfg.get("discount"))
        verdicts = diagnose(records, agent, **run)
        ctx = make_context(agent, [r for r in records if r.get("section") == "health"], **run)
    except (HealthInputError, ValueError) as err:
        print(f"drq.analysis.health: {err}", file=sys.stderr)
        return 2

    out = Path(args.out) if args.out else run_dir / "health.png"
    write_report_png(records, verdicts, ctx, out, title=f"{run_dir.name} ({agent})")
    print(f"health of {run_dir} (agent {agent}, |A| = {ctx.action_dim or '?'}, action repeat {ctx.action_repeat}, "
          f"discount {ctx.discount}):")
    for signal, verdict in verdicts.items():
        at = f" from frame {verdict.frame:,}" if verdict.frame is not None else ""
        print(f"  {signal:<11} {verdict.status}{at}: {verdict.detail}")
    evals = [r for r in records if r.get("section") == "eval" and r.get("episode_reward") is not None]
    if evals:
        last = evals[-1]
        print(f"  {'eval':<11} return {_fmt(as_float(last['episode_reward']))} at frame {int(last['frame']):,} "
              f"(best {_fmt(max(as_float(r['episode_reward']) for r in evals))}, {len(evals)} evaluations)")
    print(f"  {'restarts':<11} {restarts_line(records)}")
    print(f"wrote {out}")
    problems = [s for s, v in verdicts.items() if not v.ok]
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    sys.exit(main())
