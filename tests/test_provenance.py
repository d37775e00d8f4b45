"""run.json (drq.run.provenance) and the sweep report's warnings when the runs it aggregates differ in numerics,
versions or config. Fake run dirs, no training: each test takes well under a second (the report end to end, with
its figures, a few seconds)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from drq.run import provenance
from drq.analysis import report

EVAL_HEADER = "frame,step,episode,episode_reward,episode_length,total_time\n"
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu", "mujoco": "3.17.0", "dm_control": "1.0.50", "numpy": "2.4.6"}


def _run(run_dir: Path, seed: int, precision: str = "fp32", batch_size: int = 256, lr: float = 1e-4,
         versions: dict | None = None) -> None:  # fmt: skip
    """A run dir as train.py leaves it: .hydra/config.yaml, eval.csv and run.json (one session)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"task_name: cartpole_balance\nseed: {seed}\nprecision: auto\nframe_stack: 3\nbatch_size: {batch_size}\n"
        f"lr: {lr}\nagent:\n  name: drqv2\n  lr: ${{lr}}\n")
    rows = "".join(f"{f},{f // 8},0,{100 + seed + f / 100},1000,1.0\n" for f in range(0, 40_001, 10_000))
    (run_dir / "eval.csv").write_text(EVAL_HEADER + rows)
    session = {"precision": precision, "versions": versions or VERSIONS}
    (run_dir / "run.json").write_text(json.dumps({"format": provenance.FORMAT, "sessions": [session]}))


def test_report_warns_once_when_the_runs_mix_fp32_and_bf16(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for i, precision in enumerate(("fp32", "fp32", "bf16", "bf16")):
        _run(sweep / str(i), seed=i, precision=precision)
    runs, _ = report.find_runs(sweep)
    (line,) = report.consistency_warnings(runs)
    assert line.startswith("the runs differ in precision: ")
    assert re.search(r"bf16 in 2 runs \(\S+/sweep/2, \S+/sweep/3\)", line)
    assert re.search(r"fp32 in 2 runs \(\S+/sweep/0, \S+/sweep/1\)", line)
    # the CLI prints it once and the report lists it under Notes
    assert report.main([str(sweep), "--reps", "50", "--curve-reps", "5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"drq.analysis.report: warning: {line}"]
    assert f"- warning: {line}" in (sweep / "report" / "report.md").read_text()


def test_report_warns_one_line_per_kind_of_difference(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep / "0", seed=0)
    _run(sweep / "1", seed=1)
    assert report.consistency_warnings(report.find_runs(sweep)[0]) == []  # the same: nothing to say
    _run(sweep / "2", seed=2, batch_size=512, lr=3e-4, versions={**VERSIONS, "torch": "2.5.1", "numpy": "2.4.1"})
    lines = report.consistency_warnings(report.find_runs(sweep)[0])
    assert len(lines) == 3, lines
    versions, agent, task = lines
    # torch's minor differs; numpy's patch does not count
    assert versions.startswith("the runs differ in major versions: torch 2.13 in 2 runs") and "2.5 in 1 run (" in \
        versions and "numpy" not in versions  # fmt: skip
    assert agent.startswith("runs of the same agent and task differ in agent config: drqv2 on cartpole_balance: "
                            "agent.lr 0.0001 in 2 runs")  # fmt: skip
    assert task.startswith("runs of the same agent and task differ in task config: drqv2 on cartpole_balance: "
                           "batch_size 256 in 2 runs") and " lr " not in task  # fmt: skip


def test_run_json_keeps_every_session_and_reads_a_broken_file_as_none(tmp_path):
    assert provenance.read(tmp_path) == []
    provenance.record_session(tmp_path, {"frame": 0})
    sessions = provenance.record_session(tmp_path, {"frame": 1000})
    assert [s["frame"] for s in sessions] == [0, 1000] == [s["frame"] for s in provenance.read(tmp_path)]
    assert not list(tmp_path.glob(".*tmp*"))
    (tmp_path / "run.json").write_text("{not json")
    assert provenance.read(tmp_path) == []
    # a run dir without run.json starts from the snapshot's sessions (resume=PATH from another run dir)
    other = tmp_path / "other"
    other.mkdir()
    assert [s["frame"] for s in provenance.record_session(other, {"frame": 2000}, earlier=sessions)] == [0, 1000, 2000]


def test_code_state_in_a_checkout_outside_one_and_without_git(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "run_output.csv").write_text("untracked: not dirty\n")
    assert provenance.code_state(repo) == {"commit": head, "dirty": False, "path": str(repo)}
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_state(repo)["dirty"] is True
    assert provenance.code_state(tmp_path / "repo_not") == {"commit": None, "dirty": None,
                                                            "path": str(tmp_path / "repo_not")}  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert provenance.code_state(repo)["commit"] is None


def test_a_session_record_is_plain_json():
    record = provenance.session("cpu", "fp32", "asked", 2, "egl", frame=8, resumed_from="x/snapshot.pt",
                                changes={"batch_size": (16, 32)})  # fmt: skip
    assert json.loads(json.dumps(record)) == record  # only JSON types (a snapshot loads it with weights_only=True)
    assert record["changes"] == {"batch_size": [16, 32]} and record["gl_backend"] == "egl"
    assert type(record["versions"]["torch"]) is str and record["machine"]["cores"] >= 1


def test_resume_changes_lists_every_difference_and_refuses_the_fixed_keys():
    import pytest

    from drq.run import resume_changes

    saved = {"batch_size": 16, "frame_stack": 3, "resume": "auto", "wandb": {"mode": "disabled", "tags": ["a"]},
             "agent": {"name": "drqv2", "lr": 1e-4}, "gone": 1}  # fmt: skip
    now = {"batch_size": 32, "frame_stack": 3, "resume": "/x/snapshot.pt", "wandb": {"mode": "offline", "tags": ("a",)},
           "agent": {"name": "drqv2", "lr": 1e-4}, "new": 2}  # fmt: skip
    diff = resume_changes.check(saved, now, "s.pt")
    assert diff == {"batch_size": (16, 32), "wandb.mode": ("disabled", "offline"), "new": (None, 2), "gone": (1, None)}
    assert resume_changes.describe(diff) == "batch_size 16 → 32; wandb.mode disabled → offline; new null → 2; " \
                                            "gone 1 → null"  # fmt: skip
    with pytest.raises(resume_changes.ResumeRefused) as refused:
        resume_changes.check(saved, {**now, "frame_stack": 2, "agent": {"name": "drqv2", "lr": 3e-4}}, "s.pt")
    message = str(refused.value)
    assert "\n" not in message and "frame_stack: snapshot 3, now 2 (" in message
    assert "agent.lr: snapshot 0.0001, now 0.0003 (the optimisers' saved state" in message
    assert "batch_size" not in message


def test_a_run_records_what_the_analysis_reads(debug_run):
    """The shared debug run's run.json says what it is (task, agent, seed, shapes, |A|, action repeat, discount, its
    config as in the snapshot), and the health report and the sweep report read it from there."""
    import torch

    from drq.analysis import health as health_report

    cfg, run_dir = debug_run.cfg, debug_run.run_dir
    run = provenance.read_run(run_dir)
    size, stack = cfg["image_size"], cfg["frame_stack"]
    assert {k: v for k, v in run.items() if k not in ("config", "env")} == {
        "task": "cartpole_swingup", "agent": "drqv2", "seed": cfg["seed"], "action_repeat": cfg["action_repeat"],
        "discount": cfg["discount"], "frame_stack": stack, "observation_shape": [3 * stack, size, size],
        "action_shape": [1], "action_dim": 1}  # fmt: skip
    snapshot = torch.load(run_dir / "snapshot.pt", weights_only=True)
    assert run["config"] == snapshot["config"]
    # what a deployment needs (drq.load_policy, python -m drq.export): the same in run.json and the snapshot
    assert run["env"] == snapshot["env"] == {
        "task": "cartpole_swingup", "observation_shape": [3 * stack, size, size], "frame_stack": stack,
        "image_size": size, "channel_order": "RGB", "frame_order": "oldest first",
        "action_repeat": cfg["action_repeat"], "action_shape": [1], "action_low": [-1.0], "action_high": [1.0]}
    assert health_report.read_run_config(run_dir) == {"agent": "drqv2", "action_dim": 1, "discount": cfg["discount"],
                                                      "action_repeat": cfg["action_repeat"]}  # fmt: skip
    assert report.read_run_identity(run_dir) == ("cartpole_swingup", "drqv2", str(cfg["seed"]))
