"""Aggregate report of a sweep: per-task tables, IQM with bootstrap CIs, curves and performance profiles.

    python -m drq.analysis.report SWEEP_DIR [--reference CSV ...] [--frames 100k,500k] [--out DIR]

A *run* is any directory under SWEEP_DIR that holds an ``eval.csv`` (columns ``frame, ..., episode_reward``; see
docs/architecture.md). Its task, agent and seed come from its ``run.json`` (the ``run`` record the trainer writes,
:mod:`drq.run.provenance`); a run dir from before that record: from ``.hydra/config.yaml`` (``task_name``,
``agent.name``, ``seed``).

Conventions (all x axes are **frames** = agent steps x action_repeat):

* A run's value at frame F is its **last evaluation at a frame <= F** (no interpolation: every number in the report
  was measured). A run *covers* F when ``first_eval <= F <= last_eval + spacing``, where ``spacing`` is the median
  gap between its evaluations, so a run that ended training at 1M frames with its last evaluation at 980k still counts
  at 1M (DrQ-v2's published curves stop at 980k). Outside that range the run has no value at F.
* Per-task tables: mean +- sample std (ddof=1) over the seeds that cover F, with the number of seeds.
* Aggregates use scores normalised by 1000 (the maximum return of every DMC task) and only frames that *every* run of
  the agent covers, so each point uses the same runs. IQM, mean, median and optimality gap (threshold 1.0) follow
  rliable (Agarwal et al. 2021): IQM is the 25%-trimmed mean of all runs x tasks scores pooled, cutting
  ``floor(0.25 n)`` scores from each end (``scipy.stats.trim_mean``); mean and median are over per-task means; the
  optimality gap is the mean over tasks of the per-task mean of ``max(1 - score, 0)``.
* 95% confidence intervals: percentile intervals of a stratified bootstrap (runs are resampled with replacement
  within each task, tasks are kept), as rliable's ``get_interval_estimates`` does. It is implemented here, vectorised
  (one array op per statistic instead of rliable's Python loop over replicates) and independent of ``arch``:
  rliable 1.2 pins ``arch<8``, and arch 7.x fails to import with pandas 3, which breaks ``rliable.library``. The tests check
  the point estimates against ``rliable.metrics`` and the intervals against a brute-force bootstrap.
* Performance profile: fraction of runs with normalised score > tau, averaged over tasks, for tau in [0, 1].

Warnings: the report prints one line (and lists it under Notes) for each way the runs it aggregates differ where they
should not: the resolved precision (``run.json``, else a config's ``precision`` other than ``auto``), the major.minor
version of python, torch, mujoco, dm_control or numpy (``run.json``, :mod:`drq.run.provenance`), and, among runs of the
same agent and task, the agent config (``agent.*``) or the task config (:data:`TASK_CONFIG_KEYS`), from run.json's
``run`` record (before it: ``.hydra/config.yaml``). Runs without these files are not compared.

Reference curves (``--reference``, DrQ-v2's format ``agent,task,seed,frame,episode_reward,hour``) become one more
agent labelled ``'<agent> (published)'``, drawn on the same axes over the frames the sweep covers.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

MAX_RETURN = 1000.0  # every DMC task's return is a sum of <= 1000 rewards in [0, 1]
OPTIMALITY_THRESHOLD = 1.0  # rliable's gamma, on normalised scores
CI_SIZE = 0.95
MILESTONE_FRAMES = (100_000, 500_000, 1_000_000)
REQUIRED_EVAL_COLUMNS = ("frame", "episode_reward")
REQUIRED_REFERENCE_COLUMNS = ("agent", "task", "seed", "frame", "episode_reward")
REPORT_DIR_NAME = "report"
# DrQ-v2 names ball_in_cup_catch 'cup_catch'; matching sweep tasks to reference tasks goes through this table only.
TASK_ALIASES = {"ball_in_cup_catch": "cup_catch"}


# The keys, besides agent.*, that change what a curve measures (from the run's config); runs of one agent on one task
# should agree on them. num_train_frames is not one: runs of other lengths are compared where they overlap.
TASK_CONFIG_KEYS = ("frame_stack", "action_repeat", "discount", "image_size", "camera_id", "fast_render",
                    "max_episode_frames", "num_seed_frames", "num_eval_episodes", "replay_buffer_size", "nstep",
                    "batch_size")  # fmt: skip
VERSION_KEYS = ("python", "torch", "mujoco", "dm_control", "numpy")


class ReportError(Exception):
    """Bad input for the report: the message names the file and what was wrong; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class Run:
    """One run's evaluation curve.

    frames: (T,) int64, strictly increasing, in frames. returns: (T,) float64, mean evaluation return at each frame.
    """

    task: str
    agent: str
    seed: str
    frames: np.ndarray
    returns: np.ndarray
    source: str  # the eval.csv (or reference CSV) it came from

    @property
    def spacing(self) -> int:
        """Median gap between evaluations in frames (0 with a single evaluation)."""
        return int(np.median(np.diff(self.frames))) if len(self.frames) > 1 else 0

    def covers(self, frame: int) -> bool:
        return int(self.frames[0]) <= frame <= int(self.frames[-1]) + self.spacing

    def value_at(self, frame: int) -> float:
        """Return of the last evaluation at a frame <= ``frame``; NaN where the run does not cover ``frame``."""
        if not self.covers(frame):
            return math.nan
        return float(self.returns[np.searchsorted(self.frames, frame, side="right") - 1])


# ----------------------------------------------------------------------------------------------------- reading runs
def _parse_number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ReportError(f"{path}: line {line}: column '{column}' is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ReportError(f"{path}: line {line}: column '{column}' is {text!r}, not a finite number")
    return value


def _read_csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV; ReportError naming the file if it is not a well-formed table."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return [], []
            header = [name.strip() for name in header]
            missing = [name for name in required if name not in header]
            if missing:
                raise ReportError(f"{path}: missing column(s) {missing}; the header is {header}, "
                                  f"expected at least {list(required)}")
            rows = []
            for values in reader:
                if not values or all(not v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise ReportError(f"{path}: line {reader.line_num}: {len(values)} fields, "
                                      f"the header has {len(header)}")
                rows.append((reader.line_num, dict(zip(header, (v.strip() for v in values)))))
            return header, rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: cannot read it as CSV ({e})") from None


def _curve(points: Iterable[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by frame; if a frame repeats (a resumed run re-evaluated it), keep the last row written."""
    by_frame: dict[int, float] = {}
    for frame, value in points:
        by_frame[int(round(frame))] = value
    frames = np.array(sorted(by_frame), dtype=np.int64)
    return frames, np.array([by_frame[f] for f in frames], dtype=np.float64)


def read_eval_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T,), returns (T,)) of an eval.csv; T == 0 if it has no rows yet. ReportError if malformed."""
    _, rows = _read_csv_rows(path, REQUIRED_EVAL_COLUMNS)
    return _curve((_parse_number(r["frame"], path, n, "frame"), _parse_number(r["episode_reward"], path, n,
                                                                              "episode_reward")) for n, r in rows)


def _load_yaml(path: Path):
    from omegaconf import OmegaConf  # hydra's own config library

    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError, OSError, ... : name the file whatever it was
        raise ReportError(f"{path}: cannot read it as YAML ({type(e).__name__}: {e})") from None


def _select(cfg, key: str):
    """cfg[key] as a plain scalar (interpolations resolved), or None if absent, unresolvable or not a scalar."""
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception:
        return None
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def read_run_identity(run_dir: Path) -> tuple[str, str, str]:
    """(task, agent, seed) of a run: from run.json's ``run`` record (:func:`drq.run.provenance.run_record`), or, in a
    run dir from before that record, from hydra's ``.hydra/config.yaml``; ReportError if the task cannot be told."""
    found = {k: v for k, v in _run_record(run_dir).items() if k in ("task", "agent", "seed") and v is not None}
    config = run_dir / ".hydra" / "config.yaml"
    if "task" not in found and config.is_file():
        cfg = _load_yaml(config)
        for field, key in (("task", "task_name"), ("agent", "agent.name"), ("seed", "seed")):
            if _select(cfg, key) is not None:
                found[field] = _select(cfg, key)
    if "task" not in found:
        raise ReportError(f"{run_dir}: cannot tell the run's task: expected run.json with a 'run' record (written by "
                          f"the trainer) or 'task_name' in .hydra/config.yaml")
    return str(found["task"]), str(found.get("agent", "agent")), str(found.get("seed", run_dir.name))


def _run_record(run_dir: Path) -> dict:
    from drq.run import provenance  # json and the standard library only

    return provenance.read_run(run_dir)


def find_runs(sweep_dir: Path, skip: Path | None = None) -> tuple[list[Run], list[str]]:
    """Every run under ``sweep_dir`` (any depth) and notes about runs skipped because they have no evaluation yet."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: not a directory (expected a hydra sweep dir holding run dirs with eval.csv)")
    paths = sorted(p for p in sweep_dir.rglob("eval.csv")
                   if skip is None or not p.resolve().is_relative_to(skip.resolve()))
    if not paths:
        raise ReportError(f"{sweep_dir}: no eval.csv found under it (expected run dirs such as "
                          f"{sweep_dir}/0/eval.csv written by `python train.py -m ...`)")
    runs, notes = [], []
    for path in paths:
        frames, returns = read_eval_csv(path)
        if len(frames) == 0:
            notes.append(f"{path}: no evaluation yet, skipped")
            continue
        task, agent, seed = read_run_identity(path.parent)
        runs.append(Run(task, agent, seed, frames, returns, str(path)))
    if not runs:
        raise ReportError(f"{sweep_dir}: none of its {len(paths)} eval.csv files has an evaluation row yet "
                          f"(first: {paths[0]})")
    return runs, notes


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out: dict = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: str(node)}


def _run_facts(run_dir: Path) -> dict:
    """What :func:`consistency_warnings` compares, from a run dir's run.json (its sessions and its ``run`` record's
    config; before that record: .hydra/config.yaml), a value it cannot tell left out: ``{"precision": 'fp32' |
    'bf16' | 'bf16+fp32', "versions": {name: 'major.minor'}, "config":
    {dotted key: value as text}}``."""
    from drq.run import provenance  # json and the standard library only

    facts: dict = {"versions": {}, "config": {}}
    config = run_dir / ".hydra" / "config.yaml"
    recorded = _run_record(run_dir).get("config")
    if isinstance(recorded, dict):
        facts["config"] = _flat(recorded)
    elif config.is_file():  # a run dir from before run.json's run record
        from omegaconf import OmegaConf

        try:
            facts["config"] = _flat(OmegaConf.to_container(_load_yaml(config), resolve=True))
        except Exception:  # an unresolvable interpolation: compare nothing of this run's config
            pass
    sessions = provenance.read(run_dir)
    precisions = sorted({str(s["precision"]) for s in sessions if s.get("precision")})
    if precisions:
        facts["precision"] = "+".join(precisions)
    elif facts["config"].get("precision") not in (None, "auto"):
        facts["precision"] = facts["config"]["precision"]
    for name in VERSION_KEYS:
        found = sorted({".".join(str(v).split("+")[0].split(".")[:2]) for v in
                        ((s.get("versions") or {}).get(name) for s in sessions) if v})  # fmt: skip
        if found:
            facts["versions"][name] = "+".join(found)
    return facts


def _spread(values: dict[str, list[str]]) -> str:
    """``'fp32 in 2 runs (a, b), bf16 in 1 run (c)'``: each value with its count and up to 3 run dirs."""
    parts = []
    for value, dirs in sorted(values.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(dirs[:3]) + (", ..." if len(dirs) > 3 else "")
        parts.append(f"{value} in {len(dirs)} run{'s' if len(dirs) != 1 else ''} ({shown})")
    return ", ".join(parts)


def consistency_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per way the runs differ where an aggregate assumes they do not (see the module docstring)."""
    facts = {r.source: _run_facts(Path(r.source).parent) for r in runs}
    name = {r.source: str(Path(r.source).parent) for r in runs}
    lines = []
    def who_has(members: list[Run], table: str | None, key: str) -> dict[Any, list[str]]:
        """The runs of ``members`` by their value of ``key`` (in ``facts[...][table]``, or the facts themselves)."""
        found: dict[Any, list[str]] = defaultdict(list)
        for r in members:
            where = facts[r.source][table] if table else facts[r.source]
            if key in where:
                found[where[key]].append(name[r.source])
        return found

    precision = who_has(runs, None, "precision")
    if len(precision) > 1:
        lines.append(f"the runs differ in precision: {_spread(precision)}; their curves mix different numerics")
    version_parts = []
    for package in VERSION_KEYS:
        found = who_has(runs, "versions", package)
        if len(found) > 1:
            version_parts.append(f"{package} {_spread(found)}")
    if version_parts:
        lines.append(f"the runs differ in major versions: {'; '.join(version_parts)}")
    for kind, wanted in (("agent config", lambda k: k.startswith("agent.") and k != "agent.name"),
                         ("task config", lambda k: k in TASK_CONFIG_KEYS)):  # fmt: skip
        parts = []
        for agent, by_task in group(runs).items():
            for task, members in by_task.items():
                keys = sorted({k for r in members for k in facts[r.source]["config"] if wanted(k)})
                for key in keys:
                    found = who_has(members, "config", key)
                    if len(found) > 1:
                        parts.append(f"{agent} on {task}: {key} {_spread(found)}")
        if parts:
            lines.append(f"runs of the same agent and task differ in {kind}: {'; '.join(parts)}")
    return lines


def read_reference_csv(path: Path) -> list[Run]:
    """Runs of a published-curve CSV (``agent,task,seed,frame,episode_reward[,hour]``), labelled '<agent> (published)'."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: reference CSV not found")
    _, rows = _read_csv_rows(path, REQUIRED_REFERENCE_COLUMNS)
    if not rows:
        raise ReportError(f"{path}: reference CSV has no rows")
    points: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for n, r in rows:
        points[(r["agent"], r["task"], r["seed"])].append(
            (_parse_number(r["frame"], path, n, "frame"), _parse_number(r["episode_reward"], path, n, "episode_reward")))
    return [Run(task, f"{agent} (published)", seed, *_curve(pts), str(path))
            for (agent, task, seed), pts in sorted(points.items())]


# --------------------------------------------------------------------------------------------------------- metrics
# Every metric takes a list with one array per task, each (R, n_m): R bootstrap replicates (or 1) of that task's n_m
# normalised run scores, and returns (R,).
Metric = Callable[[list[np.ndarray]], np.ndarray]


def iqm(per_task: list[np.ndarray]) -> np.ndarray:
    """Interquartile mean of all runs x tasks scores pooled: drop floor(0.25 n) from each end, average the rest."""
    pooled = np.sort(np.concatenate(per_task, axis=1), axis=1)
    cut = int(0.25 * pooled.shape[1])
    return pooled[:, cut:pooled.shape[1] - cut].mean(axis=1)


def mean(per_task: list[np.ndarray]) -> np.ndarray:
    """Mean over tasks of the per-task mean score."""
    return np.stack([s.mean(axis=1) for s in per_task], axis=1).mean(axis=1)


def median(per_task: list[np.ndarray]) -> np.ndarray:
    """Median over tasks of the per-task mean score."""
    return np.median(np.stack([s.mean(axis=1) for s in per_task], axis=1), axis=1)


def optimality_gap(per_task: list[np.ndarray]) -> np.ndarray:
    """Mean over tasks of the per-task mean of max(1 - score, 0) (lower is better)."""
    return np.stack([np.maximum(OPTIMALITY_THRESHOLD - s, 0.0).mean(axis=1) for s in per_task], axis=1).mean(axis=1)


AGGREGATES: dict[str, Metric] = {"IQM": iqm, "mean": mean, "median": median, "optimality gap": optimality_gap}


def performance_profile(per_task: list[np.ndarray], taus: np.ndarray) -> np.ndarray:
    """(R, len(taus)): for each tau, the fraction of runs scoring > tau, averaged over tasks."""
    return np.stack([(s[:, :, None] > taus).mean(axis=1) for s in per_task], axis=0).mean(axis=0)


def stratified_bootstrap(per_task: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray],
                         reps: int, seed: int = 0, ci_size: float = CI_SIZE
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile CI of ``statistic`` under a stratified bootstrap.

    per_task: one (n_m,) array of scores per task. Each replicate draws n_m runs with replacement from task m's runs,
    independently for each task. Returns (point, low, high), each of the statistic's per-replicate shape.
    """
    per_task = [np.asarray(s, dtype=np.float64) for s in per_task]
    if not per_task or any(s.ndim != 1 or s.size == 0 for s in per_task):
        raise ValueError("per_task must be a non-empty list of non-empty 1-D score arrays")
    rng = np.random.default_rng(seed)
    point = statistic([s[None, :] for s in per_task])[0]
    replicates = statistic([s[rng.integers(0, s.size, size=(reps, s.size))] for s in per_task])
    alpha = 100 * (1 - ci_size) / 2
    low, high = np.percentile(replicates, [alpha, 100 - alpha], axis=0)
    return point, low, high


# ----------------------------------------------------------------------------------------------- sweep arithmetic
def group(runs: Iterable[Run]) -> dict[str, dict[str, list[Run]]]:
    """agent -> task -> runs (insertion-sorted by agent, task, seed)."""
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.agent, r.task, _seed_key(r.seed))):
        out[run.agent][run.task].append(run)
    return out


def _seed_key(seed: str):
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def common_range(runs: Sequence[Run]) -> tuple[int, int]:
    """[lo, hi] frames covered by every run; ReportError naming the files if empty."""
    lo = max(int(r.frames[0]) for r in runs)
    hi = min(int(r.frames[-1]) + r.spacing for r in runs)
    if lo > hi:
        spans: dict[str, list[str]] = defaultdict(list)
        for r in runs:
            spans[r.task].append(f"{r.source} covers frames {int(r.frames[0])}-{int(r.frames[-1]) + r.spacing}")
        detail = "; ".join(f"{task}: " + ", ".join(s) for task, s in spans.items())
        raise ReportError(f"runs of agent '{runs[0].agent}' do not overlap in frames, so they cannot be aggregated "
                          f"at a common frame: {detail}")
    return lo, hi


def scores_at(by_task: dict[str, list[Run]], frame: int) -> list[np.ndarray]:
    """One (n_m,) array of normalised scores per task at ``frame`` (runs that cover it)."""
    return [np.array([v for v in (r.value_at(frame) for r in runs) if not math.isnan(v)]) / MAX_RETURN
            for runs in by_task.values()]


def eval_grid(runs: Iterable[Run], lo: int, hi: int) -> np.ndarray:
    """Sorted union of the runs' evaluation frames within [lo, hi]."""
    frames = np.unique(np.concatenate([r.frames for r in runs]))
    return frames[(frames >= lo) & (frames <= hi)]


def parse_frames(text: str) -> list[int]:
    """'100k,500k,1M' or '100000,500000' -> [100000, 500000, 1000000]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:].lower(), 1)
        number = item[:-1] if scale != 1 else item
        try:
            value = float(number) * scale
        except ValueError:
            value = -1.0
        if not item or value < 0 or value != int(value):
            raise ReportError(f"--frames: {item!r} is not a frame count; use non-negative integers such as "
                              f"100000 or 100k or 1M, separated by commas")
        out.append(int(value))
    return sorted(set(out))


def _fmt_frames(frame: int) -> str:
    if frame >= 1_000_000 and frame % 10_000 == 0:
        return f"{frame / 1_000_000:g}M"
    if frame >= 1_000 and frame % 100 == 0:
        return f"{frame / 1_000:g}k"
    return str(frame)


def _reference_key(task: str) -> str:
    return TASK_ALIASES.get(task, task)


# ------------------------------------------------------------------------------------------------------- the report
@dataclass
class Sweep:
    """Runs of the sweep and of the references, grouped, with each agent's common frame range."""

    agents: dict[str, dict[str, list[Run]]]  # sweep agents: agent -> task -> runs
    references: dict[str, dict[str, list[Run]]]  # reference agents restricted to the sweep's tasks
    ranges: dict[str, tuple[int, int]]  # agent (sweep or reference) -> common frame range for aggregates
    tasks: list[str]
    notes: list[str]


def _is_dmc(task: str) -> bool:
    """A DMC task name (returns in [0, 1000]), not a Gymnasium env's id or entry point."""
    from drq.envs.tasks import resolve_task  # pure python: the task table

    try:
        resolve_task(task)
    except ValueError:
        return False
    return True


def build_sweep(runs: list[Run], reference_runs: list[Run], notes: list[str]) -> Sweep:
    agents = group(runs)
    tasks = sorted({r.task for r in runs})
    ranges = {agent: common_range([r for rs in by_task.values() for r in rs]) for agent, by_task in agents.items()}
    references: dict[str, dict[str, list[Run]]] = {}
    other_scales = [t for t in tasks if not _is_dmc(t)]
    if other_scales:
        notes.append(f"{', '.join(other_scales)}: not DMC tasks (Gymnasium envs, task=gym), whose returns have their "
                     f"own scale: the aggregates divide by {MAX_RETURN:g} all the same; read their per-task rows and "
                     "curves")
    wanted = {_reference_key(t): t for t in tasks}
    for agent, by_task in group(reference_runs).items():
        matched = {wanted[k]: by_task[k] for k in sorted(by_task) if k in wanted}
        if not matched:
            notes.append(f"reference '{agent}' has none of the sweep's tasks ({', '.join(tasks)}), not drawn")
            continue
        references[agent] = {t: matched[t] for t in tasks if t in matched}
        missing = [t for t in tasks if t not in matched]
        if missing:
            notes.append(f"reference '{agent}' lacks {', '.join(missing)}: drawn per task only, not in aggregates")
        else:
            ranges[agent] = common_range([r for rs in matched.values() for r in rs])
    return Sweep(agents, references, ranges, tasks, notes)


def final_frame(sweep: Sweep, agent: str) -> int:
    """Last frame at which every run of a sweep agent has been evaluated, clipped into its common range."""
    lo, hi = sweep.ranges[agent]
    return min(hi, max(lo, min(int(r.frames[-1]) for rs in sweep.agents[agent].values() for r in rs)))


def default_frames(sweep: Sweep) -> list[int]:
    """Each sweep agent's final frame, plus the milestones (100k, 500k, 1M) that all runs of some agent cover."""
    frames = {final_frame(sweep, agent) for agent in sweep.agents}
    frames |= {m for m in MILESTONE_FRAMES for agent in sweep.agents
               if sweep.ranges[agent][0] <= m <= sweep.ranges[agent][1]}
    return sorted(frames)


def _cell(values: np.ndarray, total: int) -> str:
    if values.size == 0:
        return "—"
    text = f"{values.mean():.0f}" + (f" ± {values.std(ddof=1):.0f}" if values.size > 1 else "")
    return text + f" (n={values.size})" if values.size != total or total == 1 else text


def markdown_report(sweep: Sweep, frames: list[int], reps: int, seed: int, sweep_dir: Path,
                    figures: list[str]) -> str:
    lines = [f"# Sweep report: `{sweep_dir}`", ""]
    n_runs = sum(len(rs) for by_task in sweep.agents.values() for rs in by_task.values())
    lines += [f"{n_runs} runs; agents: {', '.join(sweep.agents)}; tasks: {', '.join(sweep.tasks)}.", "",
              "Frames = agent steps × action_repeat. A run's value at frame F is its last evaluation at a frame ≤ F "
              "(no interpolation), counted only while F is within one evaluation interval after its last evaluation. "
              "Returns are eval.csv's `episode_reward` (the mean over the evaluation episodes).", ""]
    lines += ["## Per task: mean ± std over seeds", "",
              "Sample std (ddof=1) over seeds; `(n=...)` when not every seed of that task covers the frame.", ""]
    lines += ["| task | agent | " + " | ".join(_fmt_frames(f) for f in frames) + " |",
              "|---|---|" + "---|" * len(frames)]
    for task in sweep.tasks:
        for agent, by_task in list(sweep.agents.items()) + list(sweep.references.items()):
            if task not in by_task:
                continue
            runs = by_task[task]
            cells = [_cell(np.array([v for v in (r.value_at(f) for r in runs) if not math.isnan(v)]), len(runs))
                     for f in frames]
            lines.append(f"| {task} | {agent} | " + " | ".join(cells) + " |")
    lines += ["", f"## Aggregate over tasks (return / {MAX_RETURN:g}), 95% stratified-bootstrap CIs", "",
              f"IQM, mean, median and optimality gap as in rliable; {reps} bootstrap replicates (seed {seed}); only "
              "frames covered by every run of the agent.", ""]
    lines += ["| frames | agent | runs / tasks | " + " | ".join(AGGREGATES) + " |",
              "|---|---|---|" + "---|" * len(AGGREGATES)]
    for frame in frames:
        for agent, (lo, hi) in sweep.ranges.items():
            by_task = sweep.agents.get(agent) or sweep.references[agent]
            if not lo <= frame <= hi:
                continue
            per_task = scores_at(by_task, frame)
            cells = []
            for fn in AGGREGATES.values():
                point, low, high = stratified_bootstrap(per_task, fn, reps=reps, seed=seed)
                cells.append(f"{point:.3f} [{low:.3f}, {high:.3f}]")
            shape = f"{sum(s.size for s in per_task)} / {len(per_task)}"
            lines.append(f"| {_fmt_frames(frame)} | {agent} | {shape} | " + " | ".join(cells) + " |")
    uncovered = [f for f in frames if not any(lo <= f <= hi for lo, hi in sweep.ranges.values())]
    if uncovered:
        lines += ["", "Not every run covers " + ", ".join(_fmt_frames(f) for f in uncovered) +
                  ": no aggregate there."]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    lines += ["", "## Runs", "", "| task | agent | seed | evaluations | frames | eval.csv |", "|---|---|---|---|---|---|"]
    for agent, by_task in sweep.agents.items():
        for task, runs in by_task.items():
            for r in runs:
                lines.append(f"| {task} | {agent} | {r.seed} | {len(r.frames)} | {int(r.frames[0])}–"
                             f"{int(r.frames[-1])} | `{r.source}` |")
    if sweep.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in sweep.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- figures
def _style(agent: str, index: int) -> dict:
    if agent.endswith("(published)"):
        return {"color": "0.35", "linestyle": "--", "marker": "o", "markersize": 3}
    return {"color": f"C{index}", "linestyle": "-", "marker": "o", "markersize": 3}


def _clip_reference(frames: np.ndarray, x_max: int) -> np.ndarray:
    """Reference frames up to the first one at or past x_max (so its line reaches the axis edge)."""
    past = np.nonzero(frames >= x_max)[0]
    return frames[: past[0] + 1] if past.size else frames


def plot_curves(sweep: Sweep, path: Path, reps: int, seed: int) -> None:
    """Panel 1: IQM vs frames with 95% CI bands per agent; then one panel per task: mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n_panels = 1 + len(sweep.tasks)
    cols = min(n_panels, 4)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    axes = axes.ravel()
    sweep_runs = [r for by_task in sweep.agents.values() for rs in by_task.values() for r in rs]
    x_max = max(int(r.frames[-1]) for r in sweep_runs)
    all_agents = list(sweep.agents.items()) + list(sweep.references.items())

    ax = axes[0]
    for i, (agent, by_task) in enumerate(all_agents):
        if agent not in sweep.ranges:
            continue
        lo, hi = sweep.ranges[agent]
        grid = eval_grid([r for rs in by_task.values() for r in rs], lo, hi)
        if agent in sweep.references:
            grid = _clip_reference(grid, x_max)
        if grid.size == 0:
            continue
        stats = np.array([stratified_bootstrap(scores_at(by_task, int(f)), iqm, reps=reps, seed=seed) for f in grid])
        style = _style(agent, i)
        ax.plot(grid, stats[:, 0], label=agent, **style)
        ax.fill_between(grid, stats[:, 1], stats[:, 2], color=style["color"], alpha=0.2, linewidth=0)
    ax.set_title(f"IQM over {len(sweep.tasks)} task(s), 95% CI")
    ax.set_ylabel(f"IQM of return / {MAX_RETURN:g}")
    ax.set_ylim(-0.02, 1.02)

    for ax, task in zip(axes[1:], sweep.tasks):
        for i, (agent, by_task) in enumerate(all_agents):
            if task not in by_task:
                continue
            runs = by_task[task]
            grid = np.unique(np.concatenate([r.frames for r in runs]))
            if agent in sweep.references:
                grid = _clip_reference(grid, x_max)
            values = np.array([[r.value_at(int(f)) for r in runs] for f in grid])  # (G, seeds)
            counts = (~np.isnan(values)).sum(axis=1)
            keep = counts > 0
            if not keep.any():
                continue
            grid, values, counts = grid[keep], values[keep], counts[keep]
            mu = np.nanmean(values, axis=1)
            sd = np.array([np.nanstd(v, ddof=1) if c > 1 else 0.0 for v, c in zip(values, counts)])
            style = _style(agent, i)
            ax.plot(grid, mu, label=f"{agent} ({len(runs)} seeds)", **style)
            ax.fill_between(grid, mu - sd, mu + sd, color=style["color"], alpha=0.15, linewidth=0)
        ax.set_title(f"{task}: mean ± std over seeds")
        ax.set_ylabel("episode return")
        if _is_dmc(task):  # a Gymnasium env's returns have their own scale
            ax.set_ylim(-20, MAX_RETURN + 20)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[:n_panels]:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: _fmt_frames(int(x))))
        ax.set_xlim(0, x_max * 1.02 if x_max else 1)
        ax.set_xlabel("frames")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_profiles(sweep: Sweep, frame_of: dict[str, int], path: Path, reps: int, seed: int) -> None:
    """Performance profiles (fraction of runs with score > tau) with 95% CI bands, one curve per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = np.linspace(0.0, 1.0, 101)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    all_agents = list(sweep.agents.items()) + list(sweep.references.items())
    for i, (agent, by_task) in enumerate(all_agents):
        if agent not in frame_of:
            continue
        point, low, high = stratified_bootstrap(scores_at(by_task, frame_of[agent]),
                                                lambda s: performance_profile(s, taus), reps=reps, seed=seed)
        style = _style(agent, i)
        style.pop("marker"), style.pop("markersize")
        ax.plot(taus, point, label=f"{agent} @ {_fmt_frames(frame_of[agent])} frames", **style)
        ax.fill_between(taus, low, high, color=style["color"], alpha=0.2, linewidth=0)
    ax.set_xlabel(f"normalised score τ (return / {MAX_RETURN:g})")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(f"Performance profile over {len(sweep.tasks)} task(s), 95% CI")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_frames(sweep: Sweep) -> dict[str, int]:
    """Frame of each agent's profile: a sweep agent's final frame; a reference at the latest of those, if covered."""
    out = {agent: final_frame(sweep, agent) for agent in sweep.agents}
    target = max(out.values())
    for agent, (lo, hi) in sweep.ranges.items():
        if agent in sweep.references and lo <= target <= hi:
            out[agent] = target
    return out


def write_report(sweep_dir: Path, references: Sequence[Path] = (), frames: Sequence[int] | None = None,
                 out_dir: Path | None = None, reps: int = 50_000, curve_reps: int = 2_000, seed: int = 0,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Read the sweep, write report.md, curves.png and performance_profile.png into out_dir; return report.md.
    ``warn``: gets each :func:`consistency_warnings` line (default: printed to stderr); they are also in the Notes."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / REPORT_DIR_NAME
    runs, notes = find_runs(sweep_dir, skip=out_dir)
    warn = warn or (lambda line: print(f"drq.analysis.report: warning: {line}", file=sys.stderr))
    for line in consistency_warnings(runs):
        warn(line)
        notes.append(f"warning: {line}")
    reference_runs = [r for path in references for r in read_reference_csv(Path(path))]
    sweep = build_sweep(runs, reference_runs, notes)
    frames = list(frames) if frames else default_frames(sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = ["curves.png", "performance_profile.png"]
    plot_curves(sweep, out_dir / figures[0], reps=curve_reps, seed=seed)
    plot_profiles(sweep, profile_frames(sweep), out_dir / figures[1], reps=curve_reps, seed=seed)
    report = out_dir / "report.md"
    report.write_text(markdown_report(sweep, frames, reps, seed, sweep_dir, figures))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drq.analysis.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="hydra sweep dir (run dirs with eval.csv anywhere below it)")
    parser.add_argument("--reference", type=Path, nargs="+", default=[], metavar="CSV",
                        help="published curves (agent,task,seed,frame,episode_reward,hour), drawn on the same axes")
    parser.add_argument("--frames", type=str, default=None,
                        help="table frames, e.g. 100k,500k,1M (default: milestones covered + the last common frame)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: SWEEP_DIR/report)")
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates for the tables")
    parser.add_argument("--curve-reps", type=int, default=2_000, help="bootstrap replicates per curve point")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    args = parser.parse_args(argv)
    try:
        if args.reps < 1 or args.curve_reps < 1:
            raise ReportError(f"--reps and --curve-reps must be >= 1 (got {args.reps}, {args.curve_reps})")
        frames = parse_frames(args.frames) if args.frames else None
        report = write_report(args.sweep_dir, args.reference, frames, args.out, args.reps, args.curve_reps, args.seed)
    except ReportError as e:
        print(f"drq.analysis.report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {report} (+ {', '.join(p.name for p in sorted(report.parent.glob('*.png')))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
