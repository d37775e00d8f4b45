"""Check a sweep's launcher before hydra starts: a missing plugin, a missing ``sbatch`` or an unreachable Ray cluster
is one line naming what to install or check (exit 2 via :mod:`drq.config_errors`), and nothing is written.

``python train.py -m hydra/launcher=slurm ...`` without the submitit plugin would otherwise fail inside hydra with a
multi-line "Could not load 'hydra/launcher/submitit_slurm'" after the sweep dir exists; without ``sbatch`` it would
fail in submitit with a traceback; with ``hydra.launcher.ray.init.address=host:port`` pointing nowhere, Ray would
retry for a minute and then raise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

from drq.config_errors import CONFIG_DIR, ConfigError

SLURM_EXTRA = 'pip install -e ".[slurm]"  (hydra-submitit-launcher)'
RAY_EXTRA = 'pip install -e ".[ray]"  (hydra-ray-launcher, ray)'
# launcher config name -> (hydra plugin module, the install line, the engine module it drives)
PLUGINS = {
    "slurm": ("hydra_plugins.hydra_submitit_launcher", SLURM_EXTRA, "submitit"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", SLURM_EXTRA, "submitit"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", SLURM_EXTRA, "submitit"),
    "ray_cluster": ("hydra_plugins.hydra_ray_launcher", RAY_EXTRA, "ray"),
    "ray": ("hydra_plugins.hydra_ray_launcher", RAY_EXTRA, "ray"),
    "local": ("hydra_plugins.hydra_joblib_launcher", 'pip install -e .  (hydra-joblib-launcher)', "joblib"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", 'pip install -e .  (hydra-joblib-launcher)', "joblib"),
    "basic": (None, "", None),
}
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start --head` leaves its address


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _override(argv: list[str], key: str) -> str | None:
    value = None
    for token in argv:
        for prefix in ("++", "+", ""):
            if token.startswith(f"{prefix}{key}="):
                value = token.split("=", 1)[1].strip().strip("'\"")
    return value


def check_launcher(argv: list[str], config_dir: Path = CONFIG_DIR,
                   reachable: Callable[[str, int, float], bool] | None = None) -> None:  # fmt: skip
    """Raise :class:`ConfigError` (one line) if the launcher chosen in ``argv`` cannot run here."""
    name = _override(argv, "hydra/launcher")
    if name is None:
        return
    ours = sorted(p.stem for p in (config_dir / "hydra" / "launcher").glob("*.yaml"))
    if name not in PLUGINS and name not in ours:
        raise ConfigError(f"unknown hydra/launcher '{name}'; choices: {', '.join(ours)} (cfgs/hydra/launcher/), or "
                          f"hydra's own {', '.join(k for k in PLUGINS if k not in ours)}")  # fmt: skip
    plugin, install, engine = PLUGINS.get(name, (None, "", None))
    for module in (plugin, engine):
        if module and not _installed(module):
            raise ConfigError(f"hydra/launcher={name} needs the {module.split('.')[-1]} package, which is not "
                              f"installed: {install}")  # fmt: skip
    multirun = bool({"-m", "--multirun"} & set(argv))
    if not multirun:
        return  # a single run ignores the launcher
    if engine == "submitit" and name != "submitit_local" and shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher={name} submits with SLURM's sbatch, which is not on PATH: run the sweep on "
                          "a SLURM login node (or start a one-node cluster here: bench/cluster/slurm_local.sh)")
    if engine == "submitit" and name == "slurm":
        _check_slurm_gpus(argv, config_dir)
    if engine == "ray":
        _check_ray_address(name, argv, reachable or _tcp_reachable)


def _check_slurm_gpus(argv: list[str], config_dir: Path) -> None:
    """GPUs asked for (``gpus_per_node``, 1 in cfgs/hydra/launcher/slurm.yaml) on a partition whose nodes have none
    would make sbatch fail with "Invalid generic resource (gres) specification" and a traceback."""
    import yaml

    defaults = yaml.safe_load((config_dir / "hydra" / "launcher" / "slurm.yaml").read_text()) or {}
    gpus = _override(argv, "hydra.launcher.gpus_per_node") or str(defaults.get("gpus_per_node") or 0)
    partition = _override(argv, "hydra.launcher.partition") or defaults.get("partition") or None
    if not gpus.isdigit() or int(gpus) == 0 or shutil.which("sinfo") is None:
        return
    try:
        lines = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return
    rows = [line.split("|", 1) for line in lines.splitlines() if "|" in line]
    chosen = [(p, g) for p, g in rows if (p.rstrip("*") == partition if partition else p.endswith("*"))]
    if chosen and all("gpu" not in g for _, g in chosen):
        where = f"partition {chosen[0][0].rstrip('*')}"
        raise ConfigError(f"hydra.launcher.gpus_per_node={gpus} but {where} has no GPUs (sinfo %G: "
                          f"{chosen[0][1]}): use hydra.launcher.gpus_per_node=0 for CPU runs, or "
                          "hydra.launcher.partition=<a GPU partition>")  # fmt: skip


def _check_ray_address(name: str, argv: list[str], reachable: Callable[[str, int, float], bool]) -> None:
    """``address`` null / local starts a Ray here (nothing to check); ``auto`` needs a running local cluster;
    ``host:port`` / ``ray://host:port`` must accept a TCP connection."""
    key = "hydra.launcher.ray.init.address"
    address = _override(argv, key)
    if address in (None, "null", "None", ""):
        address = os.environ.get("RAY_ADDRESS") or "null"  # ray.init(address=None) joins $RAY_ADDRESS if set
    if address in ("null", "local"):
        return
    if address == "auto":
        found = os.environ.get("RAY_ADDRESS") or (RAY_CURRENT_CLUSTER.read_text().strip()
                                                  if RAY_CURRENT_CLUSTER.exists() else "")  # fmt: skip
        if not found:
            raise ConfigError(f"{key}=auto but no Ray cluster runs on this machine: start one with `ray start --head`, "
                              f"or use {key}=null (a Ray started for this sweep) or host:port")  # fmt: skip
        address = found
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}={address!r} is not host:port, ray://host:port, auto or null")
    if not reachable(host, int(port), 5.0):
        raise ConfigError(f"no Ray cluster answers at {address} ({key}): check that `ray start --head` runs there "
                          "and the port is open, or use address=null for a Ray on this machine")


def _tcp_reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
