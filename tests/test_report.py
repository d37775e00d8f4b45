"""drq.analysis.report: aggregate estimators and bootstrap CIs against hand / brute-force / rliable references, the
report end to end on synthetic run dirs, its error messages, and (slow) a real joblib sweep followed by the report."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module_as_main

from drq.analysis import report
from drq.analysis.report import Run, iqm, mean, median, optimality_gap, performance_profile, stratified_bootstrap

REPO = Path(__file__).resolve().parents[1]
EVAL_HEADER = "frame,step,episode,episode_reward,episode_length,total_time\n"


def _tasks(matrix: np.ndarray) -> list[np.ndarray]:
    """(runs, tasks) matrix -> the per-task (1, runs) list the metrics take."""
    return [matrix[:, m][None, :] for m in range(matrix.shape[1])]


# ------------------------------------------------------------------------------------------------- point estimates
def test_aggregates_match_hand_computation():
    # 4 runs x 2 tasks. Pooled and sorted: 0.0 0.1 0.2 0.3 | 0.4 0.6 ... -> IQM drops 2 from each end of 8.
    a = [0.1, 0.9, 0.4, 0.6]
    b = [0.2, 0.3, 1.0, 0.0]
    m = np.array([a, b]).T
    assert iqm(_tasks(m))[0] == pytest.approx((0.2 + 0.3 + 0.4 + 0.6) / 4)
    assert mean(_tasks(m))[0] == pytest.approx((0.5 + 0.375) / 2)
    assert median(_tasks(m))[0] == pytest.approx((0.5 + 0.375) / 2)
    # gap: task a mean of (0.9, 0.1, 0.6, 0.4) = 0.5; task b mean of (0.8, 0.7, 0, 1.0) = 0.625
    assert optimality_gap(_tasks(m))[0] == pytest.approx((0.5 + 0.625) / 2)
    # 3 runs x 2 tasks = 6 scores: floor(1.5) = 1 dropped from each end (rliable / scipy.stats.trim_mean convention)
    m3 = np.array([[0.9, 0.1], [0.5, 0.2], [0.3, 0.8]])
    assert iqm(_tasks(m3))[0] == pytest.approx((0.2 + 0.3 + 0.5 + 0.8) / 4)
    # three tasks: median is the middle per-task mean
    m_med = np.array([[0.1, 0.5, 0.9], [0.3, 0.7, 0.9]])
    assert median(_tasks(m_med))[0] == pytest.approx(0.6)


def test_aggregates_match_rliable_metrics():
    rliable_metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(3)
    for runs, tasks in [(5, 3), (10, 7), (3, 1), (8, 2)]:
        m = rng.uniform(-0.1, 1.1, size=(runs, tasks))
        assert iqm(_tasks(m))[0] == pytest.approx(rliable_metrics.aggregate_iqm(m))
        assert mean(_tasks(m))[0] == pytest.approx(rliable_metrics.aggregate_mean(m))
        assert median(_tasks(m))[0] == pytest.approx(rliable_metrics.aggregate_median(m))
        assert optimality_gap(_tasks(m))[0] == pytest.approx(rliable_metrics.aggregate_optimality_gap(m))


def test_performance_profile_hand_computation():
    per_task = [np.array([[0.1, 0.9]]), np.array([[0.5, 0.5, 0.7]])]
    taus = np.array([0.0, 0.5, 0.6, 0.95])
    # tau 0.0: all above; 0.5: a 1/2, b 1/3 (strictly greater); 0.6: a 1/2, b 1/3; 0.95: none
    expected = [1.0, (1 / 2 + 1 / 3) / 2, (1 / 2 + 1 / 3) / 2, 0.0]
    np.testing.assert_allclose(performance_profile(per_task, taus)[0], expected)


# ------------------------------------------------------------------------------------------------------------- CIs
def test_bootstrap_ci_matches_exact_enumeration():
    """2 tasks x 3 runs: all 27 x 27 stratified resamples are equally likely; their IQMs give the exact bootstrap
    distribution, whose 2.5% / 97.5% quantiles the Monte-Carlo percentile CI must land on."""
    a = np.array([0.05, 0.40, 0.90])
    b = np.array([0.20, 0.55, 0.70])
    exact = []
    for ia in itertools.product(range(3), repeat=3):
        for ib in itertools.product(range(3), repeat=3):
            pooled = np.sort(np.concatenate([a[list(ia)], b[list(ib)]]))
            exact.append(pooled[1:5].mean())  # 6 scores, drop 1 from each end
    exact = np.array(exact)
    point, low, high = stratified_bootstrap([a, b], iqm, reps=40_000, seed=1)
    assert point == pytest.approx(np.sort(np.concatenate([a, b]))[1:5].mean())
    assert low <= point <= high
    tol = 0.01
    assert np.mean(exact < low) <= 0.025 + tol and np.mean(exact <= low) >= 0.025 - tol
    assert np.mean(exact > high) <= 0.025 + tol and np.mean(exact >= high) >= 0.025 - tol


def test_bootstrap_ci_matches_brute_force_loop():
    """A plain loop bootstrap (another RNG, resampling each task's runs) agrees with the vectorised one."""
    rng = np.random.RandomState(123)
    matrix = rng.uniform(0.0, 1.0, size=(5, 3)) ** 2  # (runs, tasks)
    per_task = [matrix[:, m] for m in range(3)]
    reps = 6_000
    brute = {name: [] for name in report.AGGREGATES}
    for _ in range(reps):
        resampled = np.stack([col[rng.randint(0, len(col), size=len(col))] for col in per_task], axis=1)
        flat = np.sort(resampled.ravel())  # 15 scores: drop floor(3.75) = 3 from each end
        brute["IQM"].append(flat[3:12].mean())
        brute["mean"].append(resampled.mean(axis=0).mean())
        brute["median"].append(np.median(resampled.mean(axis=0)))
        brute["optimality gap"].append(np.maximum(1.0 - resampled, 0.0).mean())
    for name, fn in report.AGGREGATES.items():
        point, low, high = stratified_bootstrap(per_task, fn, reps=20_000, seed=0)
        b_low, b_high = np.percentile(brute[name], [2.5, 97.5])
        assert low <= point <= high, name
        assert low == pytest.approx(b_low, abs=0.01), name
        assert high == pytest.approx(b_high, abs=0.01), name


def test_bootstrap_is_seeded_and_rejects_empty_tasks():
    per_task = [np.array([0.1, 0.5, 0.9]), np.array([0.3, 0.4])]
    assert stratified_bootstrap(per_task, iqm, reps=500, seed=7) == stratified_bootstrap(per_task, iqm, 500, 7)
    with pytest.raises(ValueError, match="non-empty"):
        stratified_bootstrap([np.array([0.1]), np.array([])], iqm, reps=10)


# ------------------------------------------------------------------------------------------------ frame convention
def test_value_at_uses_last_eval_at_or_before_and_one_interval_after_the_end():
    run = Run("t", "a", "1", np.array([0, 100, 200, 300]), np.array([1.0, 2.0, 3.0, 4.0]), "x")
    assert run.value_at(0) == 1.0
    assert run.value_at(199) == 2.0
    assert run.value_at(200) == 3.0
    assert run.value_at(400) == 4.0  # one evaluation interval after the last evaluation still counts
    assert np.isnan(run.value_at(401))
    late = Run("t", "a", "1", np.array([50, 150]), np.array([1.0, 2.0]), "x")
    assert np.isnan(late.value_at(0))


def test_parse_frames():
    assert report.parse_frames("100k,1M,2500") == [2500, 100_000, 1_000_000]
    with pytest.raises(report.ReportError, match="'ten'"):
        report.parse_frames("100k,ten")


# ------------------------------------------------------------------------------------------------------ end to end
def _write_run(run_dir: Path, task: str, seed: int, rows: list[tuple[int, float]], agent: str = "drqv2",
               identity: str = "run.json") -> Path:
    """A run dir as train.py leaves it, with eval.csv's (frame, episode_reward) rows. ``identity``: where it says its
    task, agent and seed: ``run.json`` (the trainer's run record, :func:`drq.run.provenance.run_record`) or, as in a
    run dir from before that record, only ``.hydra/config.yaml``."""
    from drq.run import provenance

    config = {"task_name": task, "seed": seed, "agent": {"name": agent, "lr": 0.0001}, "action_repeat": 2,
              "discount": 0.99, "frame_stack": 3}  # fmt: skip
    run_dir.mkdir(parents=True)
    if identity == "run.json":
        provenance.record_session(run_dir, {"frame": 0}, run=provenance.run_record(config, (9, 84, 84), (1,)))
    else:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(
            f"task_name: {task}\nseed: {seed}\nagent:\n  name: {agent}\n  lr: 0.0001\n")
    lines = [f"{f},{f // 2},{i},{r},{500},{i * 1.5}\n" for i, (f, r) in enumerate(rows)]
    (run_dir / "eval.csv").write_text(EVAL_HEADER + "".join(lines))
    return run_dir / "eval.csv"


def _return(task_index: int, seed: int, frame: int) -> float:
    """Synthetic eval return that encodes task, seed and frame."""
    return 100.0 * task_index + 10.0 * seed + frame / 100.0


def _synthetic_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    job = 0
    for t, task in enumerate(["cartpole_balance", "ball_in_cup_catch"]):
        for seed in (1, 2, 3):
            frames = range(0, 40_001, 10_000)
            _write_run(sweep / f"{job}_{task}", task, seed, [(f, _return(t, seed, f)) for f in frames],
                       identity="hydra" if seed == 1 else "run.json")  # seed 1: run dirs from before run.json's run
            job += 1
    return sweep


def _write_reference(path: Path) -> Path:
    rows = [",agent,task,seed,frame,episode_reward,hour\n"]
    i = 0
    for task, base in (("cartpole_balance", 500.0), ("cup_catch", 300.0), ("walker_walk", 50.0)):
        for seed in (1, 3):
            for frame in range(0, 100_001, 20_000):
                rows.append(f"{i},DrQ-v2,{task},{seed},{frame},{base + seed + frame / 1000},{frame / 96 / 3600}\n")
                i += 1
    path.write_text("".join(rows))
    return path


def test_report_end_to_end(tmp_path, capsys):
    sweep = _synthetic_sweep(tmp_path)
    reference = _write_reference(tmp_path / "dmc_ref.csv")
    rc = report.main([str(sweep), "--reference", str(reference), "--frames", "25k,40k", "--reps", "2000",
                      "--curve-reps", "200"])
    assert rc == 0, capsys.readouterr().err
    out = sweep / "report"
    text = (out / "report.md").read_text()
    # at 25k every run's last evaluation <= 25k is the one at 20k: cartpole (t=0) seeds 1..3 -> 210, 220, 230
    assert "| cartpole_balance | drqv2 | 220 ± 10 | 420 ± 10 |" in text
    assert "| ball_in_cup_catch | drqv2 | 320 ± 10 | 520 ± 10 |" in text
    # the reference's cup_catch is matched to ball_in_cup_catch; at 25k its last eval is 20k: 301+20, 303+20
    assert "| ball_in_cup_catch | DrQ-v2 (published) | 322 ± 1 |" in text
    assert "walker_walk" not in text.split("## Runs")[0].split("## Per task")[1]  # not a sweep task
    # aggregate IQM at 40k: scores 0.41 0.42 0.43 0.51 0.52 0.53 -> drop one each end -> mean(0.42, 0.43, 0.51, 0.52)
    iqm_row = next(line for line in text.splitlines() if line.startswith("| 40k | drqv2 |"))
    assert iqm_row.split("|")[4].strip().startswith(f"{(0.42 + 0.43 + 0.51 + 0.52) / 4:.3f} [")
    for name in ("curves.png", "performance_profile.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    # run again: the report dir under the sweep must not be taken for a run
    assert report.main([str(sweep), "--reps", "200", "--curve-reps", "50"]) == 0


def test_a_run_says_who_it_is_in_run_json_and_an_old_one_in_its_hydra_config(tmp_path):
    """run.json's run record is read first (and alone: hydra's other files are not searched); a run dir from before
    it reads from .hydra/config.yaml; a run dir with neither is one clear error."""
    new = _write_run(tmp_path / "new", "walker_walk", 4, [(0, 1.0)], agent="sac").parent
    (new / ".hydra").mkdir()
    (new / ".hydra" / "config.yaml").write_text("task_name: cheetah_run\nseed: 9\nagent:\n  name: drqv2\n")
    assert report.read_run_identity(new) == ("walker_walk", "sac", "4")
    old = _write_run(tmp_path / "old", "cartpole_balance", 2, [(0, 1.0)], identity="hydra").parent
    assert report.read_run_identity(old) == ("cartpole_balance", "drqv2", "2")
    (old / ".hydra" / "config.yaml").unlink()
    (old / ".hydra" / "overrides.yaml").write_text("- task=cartpole_balance\n- seed=2\n")  # no longer searched
    with pytest.raises(report.ReportError, match="cannot tell the run's task: expected run.json"):
        report.read_run_identity(old)


def test_report_skips_runs_without_evaluations_yet(tmp_path, capsys):
    sweep = _synthetic_sweep(tmp_path)
    pending = sweep / "9_pending"
    (pending / ".hydra").mkdir(parents=True)
    (pending / "eval.csv").write_text(EVAL_HEADER)
    assert report.main([str(sweep), "--reps", "200", "--curve-reps", "50"]) == 0
    assert f"{pending / 'eval.csv'}: no evaluation yet, skipped" in (sweep / "report" / "report.md").read_text()


# ----------------------------------------------------------------------------------------------------- bad input
def _error(capsys, argv: list[str]) -> str:
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("drq.analysis.report: error: ") and "Traceback" not in err
    return err


def test_empty_sweep_dir(tmp_path, capsys):
    (tmp_path / "sweep").mkdir()
    err = _error(capsys, [str(tmp_path / "sweep")])
    assert str(tmp_path / "sweep") in err and "no eval.csv" in err
    assert "not a directory" in _error(capsys, [str(tmp_path / "missing")])


@pytest.mark.parametrize("body, expected", [
    ("frame,step,reward\n0,0,1.0\n", "missing column(s) ['episode_reward']"),
    (EVAL_HEADER + "0,0,0,12.5,500,1.0\n1000,500,1,oops,500,2.0\n", "line 3: column 'episode_reward' is 'oops'"),
    (EVAL_HEADER + "0,0,0,12.5,500\n", "line 2: 5 fields, the header has 6"),
    (EVAL_HEADER + "0,0,0,nan,500,1.0\n", "not a finite number"),
])
def test_malformed_eval_csv_names_the_file(tmp_path, capsys, body, expected):
    sweep = _synthetic_sweep(tmp_path)
    bad = sweep / "1_cartpole_balance" / "eval.csv"
    bad.write_text(body)
    err = _error(capsys, [str(sweep)])
    assert str(bad) in err and expected in err


def test_malformed_yaml_and_reference_name_the_file(tmp_path, capsys):
    sweep = _synthetic_sweep(tmp_path)
    config = sweep / "0_cartpole_balance" / ".hydra" / "config.yaml"
    config.write_text("task_name: [unclosed\n")
    err = _error(capsys, [str(sweep)])
    assert str(config) in err and "YAML" in err
    sweep = _synthetic_sweep(tmp_path / "again")
    bad_ref = tmp_path / "ref.csv"
    bad_ref.write_text("agent,task,frame\nDrQ-v2,walker_walk,0\n")
    err = _error(capsys, [str(sweep), "--reference", str(bad_ref)])
    assert str(bad_ref) in err and "'seed'" in err
    assert "'1e'" in _error(capsys, [str(sweep), "--frames", "1e"])


def test_tasks_without_overlap_in_frames(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    early = _write_run(sweep / "0", "cartpole_balance", 1, [(0, 1.0), (1000, 2.0), (2000, 3.0)])
    late = _write_run(sweep / "1", "walker_walk", 1, [(50_000, 1.0), (60_000, 2.0)])
    err = _error(capsys, [str(sweep)])
    assert "do not overlap" in err and str(early) in err and str(late) in err
    assert "cartpole_balance" in err and "0-3000" in err and "50000-70000" in err


def test_cli_prints_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_module_as_main("drq.analysis.report", str(tmp_path / "empty"))
    assert code == 2
    assert "no eval.csv found" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- a real tiny sweep
# The overrides the sweep test uses (kept in one place for whoever changes train.py / cfgs/preset/debug.yaml):
SWEEP_OVERRIDES = [
    "hydra/launcher=local", "preset=debug", "task=cartpole_balance", "seed=1,2",
    "num_train_frames=400", "num_seed_frames=200", "eval_every_frames=200", "num_eval_episodes=1",
    "save_video=false", "save_snapshot=false", "wandb.mode=disabled", "device=cpu",
]  # async_env stays on (the default): its worker must start inside joblib's loky workers too


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_joblib_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "train.py", "-m", *SWEEP_OVERRIDES, f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)  # ~25 s idle
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    evals = sorted(sweep.rglob("eval.csv"))
    assert len(evals) == 2, f"expected one eval.csv per job under {sweep}: {evals}"
    code, _, err = run_module_as_main("drq.analysis.report", str(sweep), "--reps", "500", "--curve-reps", "100")
    assert code == 0, err
    text = (sweep / "report" / "report.md").read_text()
    runs = text.split("## Runs")[1]
    assert runs.count("| cartpole_balance | drqv2 |") == 2 and "| 1 |" in runs and "| 2 |" in runs
    assert "| cartpole_balance | drqv2 | " in text.split("## Aggregate")[0]
    assert (sweep / "report" / "curves.png").stat().st_size > 10_000
    assert (sweep / "report" / "performance_profile.png").stat().st_size > 10_000
