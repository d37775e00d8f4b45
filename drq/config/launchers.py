"""A sweep's launcher checked before hydra starts (plugin, ``sbatch``, GPUs on the partition, the Ray cluster and its
resources): one :class:`ConfigError` line naming what to install, check or copy-paste (docs/clusters.md); and the
machine a command's runs are checked against (:func:`machine`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

import yaml

from drq.config import footprint
from drq.config.schema import CONFIG_DIR, ConfigError, group_choices
from drq.machine import memory

SLURM = ("hydra_plugins.hydra_submitit_launcher", 'pip install -e ".[slurm]"  (hydra-submitit-launcher)', "submitit")
RAY = ("hydra_plugins.hydra_ray_launcher", 'pip install -e ".[ray]"  (hydra-ray-launcher, ray)', "ray")
JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "pip install -e .  (hydra-joblib-launcher)", "joblib")
# launcher config name -> (hydra plugin module, the install line, the engine module it drives)
PLUGINS = {"slurm": SLURM, "submitit_slurm": SLURM, "submitit_local": SLURM, "ray_cluster": RAY, "ray": RAY,
           "local": JOBLIB, "joblib": JOBLIB, "basic": (None, "", None)}  # fmt: skip
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start --head` leaves its address
RAY_ADDRESS = "hydra.launcher.ray.init.address"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _override(argv: list[str], key: str, default: str | None = None) -> str | None:
    """The last value ``argv`` gives ``key`` (``key=``, ``+key=``, ``++key=``), unquoted; ``default`` if none."""
    found = [t.split("=", 1)[1] for t in argv if t.lstrip("+").startswith(f"{key}=")]
    return found[-1].strip().strip("'\"") if found else default


def multirun(argv: list[str]) -> bool:
    """A sweep: ``-m`` / ``--multirun`` (a single run ignores the launcher)."""
    return bool({"-m", "--multirun"} & set(argv))


def _launcher(argv: list[str]) -> tuple[str, tuple[str | None, str, str | None]]:
    name = _override(argv, "hydra/launcher", "basic")  # no hydra/launcher=: hydra's basic launcher
    return name, PLUGINS.get(name, PLUGINS["basic"])


def _launcher_value(argv: list[str], name: str, dotted: str) -> str | None:
    """``hydra.launcher.<dotted>`` from the command line, else from cfgs/hydra/launcher/<name>.yaml, else None (the
    Ray plugin's own config, which ray_cluster.yaml extends, sets no num_cpus / num_gpus: Ray's defaults apply)."""
    value, path = _override(argv, f"hydra.launcher.{dotted}"), CONFIG_DIR / "hydra" / "launcher" / f"{name}.yaml"
    if value is None and path.exists():
        value = yaml.safe_load(path.read_text())
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else str(value)


def check_launcher(argv: list[str], resources: Callable[[], tuple[int, int]] = footprint.local_resources) -> None:
    """:class:`ConfigError` (one line) if the launcher chosen in ``argv`` cannot run here; ``resources() -> (cpus,
    gpus)``: what a Ray started here would have (tests stand in a machine)."""
    name, (plugin, install, engine) = _launcher(argv)
    ours = group_choices("hydra/launcher")
    if name not in PLUGINS and name not in ours:
        raise ConfigError(f"unknown hydra/launcher '{name}'; choices: {', '.join(ours)} (cfgs/hydra/launcher/), or "
                          f"hydra's own {', '.join(k for k in PLUGINS if k not in ours)}")  # fmt: skip
    for module in (plugin, engine):
        if module and not _installed(module):
            raise ConfigError(f"hydra/launcher={name} needs the {module.split('.')[-1]} package, which is not "
                              f"installed: {install}")  # fmt: skip
    if not multirun(argv):
        return  # a single run ignores the launcher
    if engine == "submitit" and name != "submitit_local":
        if shutil.which("sbatch") is None:
            raise ConfigError(f"hydra/launcher={name} submits with SLURM's sbatch, which is not on PATH: run the sweep "
                              "on a SLURM login node (or start a one-node cluster here: bench/cluster/slurm_local.sh)")
        _check_slurm_gpus(argv, name)
    if engine == "ray" and _ray_address(argv, check=True) == "null":
        _check_local_ray_resources(argv, name, resources)


def _check_slurm_gpus(argv: list[str], name: str) -> None:
    """GPUs asked for (``gpus_per_node``, 1 in cfgs/hydra/launcher/slurm.yaml) on a partition whose nodes have none
    would make sbatch fail with "Invalid generic resource (gres) specification" and a traceback."""
    gpus, partition = _launcher_value(argv, name, "gpus_per_node") or "0", _launcher_value(argv, name, "partition")
    if not gpus.isdigit() or int(gpus) == 0 or shutil.which("sinfo") is None:
        return
    try:
        lines = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return
    rows = [line.split("|", 1) for line in lines.splitlines() if "|" in line]
    chosen = [(p, g) for p, g in rows if (p.rstrip("*") == partition if partition else p.endswith("*"))]
    if chosen and all("gpu" not in g for _, g in chosen):
        raise ConfigError(f"hydra.launcher.gpus_per_node={gpus} but partition {chosen[0][0].rstrip('*')} has no GPUs "
                          f"(sinfo %G: {chosen[0][1]}): use hydra.launcher.gpus_per_node=0 for CPU runs, or "
                          "hydra.launcher.partition=<a GPU partition>")  # fmt: skip


def _ray_address(argv: list[str], check: bool = False) -> str:
    """The Ray address a sweep will use: the override, else ``$RAY_ADDRESS`` (ray.init joins it), else ``'null'`` (a
    Ray started here). With ``check``: ``auto`` must find a running local cluster, and ``host:port`` /
    ``ray://host:port`` must accept a TCP connection within 5 s, else :class:`ConfigError`."""
    address = _override(argv, RAY_ADDRESS)
    if address in (None, "null", "None", ""):
        address = os.environ.get("RAY_ADDRESS") or "null"
    if address in ("null", "local") or not check:
        return "null" if address == "local" else address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or (
            RAY_CURRENT_CLUSTER.read_text().strip() if RAY_CURRENT_CLUSTER.exists() else "")  # fmt: skip
        if not address:
            raise ConfigError(f"{RAY_ADDRESS}=auto but no Ray cluster runs on this machine: start one with `ray start "
                              f"--head`, or use {RAY_ADDRESS}=null (a Ray started for this sweep) or host:port")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{RAY_ADDRESS}={address!r} is not host:port, ray://host:port, auto or null")
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError:
        raise ConfigError(f"no Ray cluster answers at {address} ({RAY_ADDRESS}): check that `ray start --head` runs "
                          "there and the port is open, or use address=null for a Ray on this machine") from None
    return address


def _check_local_ray_resources(argv: list[str], name: str, resources: Callable[[], tuple[int, int]]) -> None:
    """A Ray started here (address null) has this machine's CPUs and GPUs (or ``ray.init``'s num_cpus / num_gpus): a
    run asking for more would never be scheduled. Refused rather than fitted silently: the launcher config states what
    a run needs, and running differently is the user's choice (one copy-paste)."""
    def value(dotted: str, default: float) -> float:  # a number >= 0, else (null, a word) default
        text = _launcher_value(argv, name, f"ray.{dotted}") or ""
        return float(text) if text.replace(".", "", 1).isdigit() else default

    cpus_here, gpus_here = resources()
    have_cpus, have_gpus = value("init.num_cpus", cpus_here), value("init.num_gpus", gpus_here)
    ask_cpus, ask_gpus = value("remote.num_cpus", 1.0), value("remote.num_gpus", 0.0)  # Ray's defaults for a task
    if ask_cpus <= have_cpus and ask_gpus <= have_gpus:
        return
    fits = [f"hydra.launcher.ray.remote.num_gpus={min(ask_gpus, have_gpus):g}"] if ask_gpus > have_gpus else []
    fits += [f"hydra.launcher.ray.remote.num_cpus={have_cpus:g}"] if ask_cpus > have_cpus else []
    raise ConfigError(f"hydra/launcher={name} asks each run for {ask_gpus:g} GPU and {ask_cpus:g} CPUs "
                      "(hydra.launcher.ray.remote.num_gpus / num_cpus), but the Ray it starts on this machine (address "
                      f"null) has {have_gpus:g} GPUs and {have_cpus:g} CPUs, so Ray would wait forever: "
                      f"add {' '.join(fits)}, or send the sweep to a cluster with {RAY_ADDRESS}=host:port")


def machine(argv: list[str], runs: int = 1) -> footprint.Machine:
    """This machine as the ``runs`` runs of ``argv`` see it: their run dir (``hydra.sweep.dir`` / ``hydra.run.dir``),
    ``remote`` for a sweep sent to SLURM or a Ray cluster at an address (each job checks itself where it starts), and
    ``jobs``: a joblib sweep's runs at once (its ``n_jobs``, -1: all cores, -2: all but one; at most ``runs``)."""
    (name, (_, _, engine)), sweep = _launcher(argv), multirun(argv)
    n_jobs = (_launcher_value(argv, name, "n_jobs") or "-1") if sweep and engine == "joblib" else "1"  # joblib's: -1
    jobs = int(n_jobs) if n_jobs.lstrip("-").isdigit() else 1
    jobs = max(1, min(jobs if jobs > 0 else memory.usable_cores() + 1 + jobs, runs))
    elsewhere = name != "submitit_local" if engine == "submitit" else engine == "ray" and _ray_address(argv) != "null"
    run_dir = _override(argv, "hydra.sweep.dir" if sweep else "hydra.run.dir")
    return footprint.Machine.here(run_dir, remote=sweep and elsewhere, jobs=jobs)
