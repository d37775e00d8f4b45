"""Sweep launchers: bad setups stop before hydra with one line and exit 2; real sweeps through Ray and SLURM where
those engines are installed (skipped with the reason otherwise; docs/clusters.md shows both with their output)."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drq.config import launchers as launcher_checks
from drq.config.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["preset=debug", "task=cartpole_balance", "num_train_frames=800", "eval_every_frames=400", "save_video=false",
        "wandb.mode=disabled"]  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once the socket is closed


def test_unknown_launcher_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown hydra/launcher 'slrum'; choices: local, ray_cluster, slurm"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=slrum"])


def test_missing_plugin_names_the_extra(monkeypatch):
    monkeypatch.setattr(launcher_checks, "_installed", lambda module: False)
    with pytest.raises(ConfigError, match=r'hydra/launcher=slurm needs the hydra_submitit_launcher package.*\[slurm\]'):
        launcher_checks.check_launcher(["-m", "hydra/launcher=slurm"])
    with pytest.raises(ConfigError, match=r'needs the hydra_ray_launcher package.*pip install -e "\.\[ray\]"'):
        launcher_checks.check_launcher(["hydra/launcher=ray_cluster"])  # even for a single run: hydra loads it


def test_missing_sbatch_and_unreachable_ray(monkeypatch, tmp_path):
    monkeypatch.setattr(launcher_checks, "_installed", lambda module: True)
    monkeypatch.setattr(launcher_checks.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="sbatch, which is not on PATH.*slurm_local.sh"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=slurm"])
    launcher_checks.check_launcher(["hydra/launcher=slurm"])  # a single run never calls sbatch

    port = _closed_port()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=ray_cluster",
                                        f"hydra.launcher.ray.init.address=127.0.0.1:{port}"])  # fmt: skip
    monkeypatch.setattr(launcher_checks, "RAY_CURRENT_CLUSTER", tmp_path / "none")
    with pytest.raises(ConfigError, match="=auto but no Ray cluster runs on this machine"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=auto"])
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # ray.init(address=None) would join it
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=ray_cluster"])
    monkeypatch.delenv("RAY_ADDRESS")
    launcher_checks.check_launcher(["-m", "hydra/launcher=ray_cluster"],  # address null: a Ray started here
                                   resources=lambda: (4, 1))  # with a GPU and 4 CPUs (ray_cluster.yaml asks for them)
    with socket.socket() as server:  # a listening port passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        launcher_checks.check_launcher(["-m", "hydra/launcher=ray_cluster",
                                        f"hydra.launcher.ray.init.address=ray://127.0.0.1:{server.getsockname()[1]}"])


@pytest.mark.slow
def test_bad_launcher_setup_exits_2_with_one_line_and_writes_nothing(tmp_path):
    """Through train.py: the Ray address check when the plugin is there, the missing-plugin line otherwise."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=ray_cluster", *TINY, f"hydra.sweep.dir={sweep}",
           f"hydra.launcher.ray.init.address=127.0.0.1:{_closed_port()}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drq: ") and "Traceback" not in result.stderr
    expected = "no Ray cluster answers" if launcher_checks._installed("hydra_plugins.hydra_ray_launcher") else "[ray]"
    assert expected in lines[0]
    assert not sweep.exists()


def _report_rows(sweep: Path) -> None:
    for run in ("0_cartpole_balance", "1_cartpole_balance"):
        with open(sweep / run / "eval.csv", newline="") as f:
            assert [int(r["frame"]) for r in csv.DictReader(f)] == [0, 400, 800]
    result = subprocess.run([sys.executable, "-m", "drq.analysis.report", str(sweep)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = (sweep / "report" / "report.md").read_text()
    assert "2 runs; agents: drqv2; tasks: cartpole_balance." in report and "| cartpole_balance | drqv2 |" in report


def _sweep_env() -> dict:
    return {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "RAY_DEDUP_LOGS": "0"}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None
                    or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason='Ray sweep: needs pip install -e ".[ray]"')  # fmt: skip
def test_ray_sweep_two_seeds_on_a_local_ray(tmp_path):
    """A 2-run sweep through hydra/launcher=ray_cluster on a Ray started for it (address null), no GPU."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=ray_cluster", "hydra.launcher.ray.remote.num_gpus=0",
           "hydra.launcher.ray.remote.num_cpus=1", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=_sweep_env())
    assert result.returncode == 0, result.stderr[-3000:]
    _report_rows(sweep)


def _slurm_idle() -> str | None:
    """None if a SLURM node is idle here and the submitit plugin is installed, else why not."""
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return 'needs pip install -e ".[slurm]"'
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no SLURM here (start a one-node cluster with bench/cluster/slurm_local.sh start; needs root and apt)"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.split()
    return None if "idle" in states else f"no idle SLURM node (sinfo: {' '.join(states) or 'nothing'})"


@pytest.mark.slow
@pytest.mark.skipif(_slurm_idle() is not None, reason=f"SLURM sweep: {_slurm_idle()}")
def test_slurm_sweep_two_seeds_through_submitit(tmp_path):
    """A 2-run sweep through hydra/launcher=slurm (submitit, sbatch) on the cluster sinfo shows, no GPU requested."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20", *TINY,
           "seed=1,2", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=_sweep_env())
    assert result.returncode == 0, result.stderr[-3000:]
    _report_rows(sweep)


def test_gpus_asked_on_a_partition_without_gpus(monkeypatch):
    monkeypatch.setattr(launcher_checks, "_installed", lambda module: True)
    monkeypatch.setattr(launcher_checks.shutil, "which", lambda name: f"/usr/bin/{name}")
    sinfo = "debug*|(null)\ngpu|gpu:a100:8\n"
    monkeypatch.setattr(launcher_checks.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=sinfo, stderr=""))  # fmt: skip
    with pytest.raises(ConfigError, match=r"gpus_per_node=1 but partition debug has no GPUs \(sinfo %G: \(null\)\)"):
        launcher_checks.check_launcher(["-m", "hydra/launcher=slurm"])  # slurm.yaml asks for 1 GPU
    launcher_checks.check_launcher(["-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0"])
    launcher_checks.check_launcher(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
