"""Check a sweep's launcher before hydra starts: a missing plugin, a missing ``sbatch`` or an unreachable Ray cluster
is one line naming what to install or check (exit 2 via :mod:`drq.config.errors`), and nothing is written.

``python train.py -m hydra/launcher=slurm ...`` without the submitit plugin would otherwise fail inside hydra with a
multi-line "Could not load 'hydra/launcher/submitit_slurm'" after the sweep dir exists; without ``sbatch`` it would
fail in submitit with a traceback; with ``hydra.launcher.ray.init.address=host:port`` pointing nowhere, Ray would
retry for a minute and then raise.

A local Ray (``address: null``: Ray started on this machine for the sweep) asked for more per run than this machine has
(``hydra.launcher.ray.remote.num_gpus=1`` without a GPU, or more CPUs than its cores) would queue the runs as
"infeasible" and wait forever with no output. That is refused with one line naming the request that fits, rather
than fitted silently: the request is the launcher config's statement of what a run needs, and a sweep that runs
differently from what was written (fewer CPUs per run, so more runs at once) should be the user's choice, made with
one copy-paste.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Callable

from drq.config.errors import CONFIG_DIR, ConfigError
from drq.machine.memory import usable_cores

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
                   reachable: Callable[[str, int, float], bool] | None = None,
                   resources: Callable[[], tuple[int, int]] | None = None) -> None:  # fmt: skip
    """Raise :class:`ConfigError` (one line) if the launcher chosen in ``argv`` cannot run here. ``reachable(host,
    port, timeout_s)`` and ``resources() -> (cpus, gpus)`` stand in for the network and this machine in tests."""
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
        if _ray_address(argv) in ("null", "local"):
            _check_local_ray_resources(name, argv, config_dir, resources or local_resources)


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


def _ray_address(argv: list[str]) -> str:
    """The Ray address a sweep will use: the override, else ``$RAY_ADDRESS`` (ray.init joins it), else ``null``."""
    address = _override(argv, "hydra.launcher.ray.init.address")
    if address in (None, "null", "None", ""):
        address = os.environ.get("RAY_ADDRESS") or "null"
    return address


def local_resources() -> tuple[int, int]:
    """(CPUs, GPUs) a Ray started here would have: the usable cores, and the NVIDIA GPUs ``CUDA_VISIBLE_DEVICES``
    lists (else the driver's device nodes); read without importing torch or Ray."""
    cpus = usable_cores()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    else:
        gpus = len([p for p in Path("/dev").glob("nvidia*") if p.name[len("nvidia"):].isdigit()])
    return cpus, gpus


def _launcher_value(argv: list[str], config_dir: Path, name: str, dotted: str) -> str | None:
    """``hydra.launcher.<dotted>`` from the command line, else from cfgs/hydra/launcher/<name>.yaml, else from the
    hydra plugin's own config (``hydra/launcher=ray``), else None."""
    value = _override(argv, f"hydra.launcher.{dotted}")
    if value is not None:
        return value
    node: object = None
    path = config_dir / "hydra" / "launcher" / f"{name}.yaml"
    if path.exists():
        import yaml

        node = yaml.safe_load(path.read_text()) or {}
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and name in ("ray", "ray_cluster"):
        try:  # the plugin's defaults (ray_cluster.yaml has `defaults: [ray]`)
            from hydra_plugins.hydra_ray_launcher._config import RayLauncherConf

            node = RayLauncherConf().ray
            for part in dotted.split(".")[1:]:
                node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        except Exception:  # noqa: BLE001 -- an unknown plugin layout: nothing to check
            node = None
    return None if node is None else str(node)


def _check_local_ray_resources(name: str, argv: list[str], config_dir: Path,
                               resources: Callable[[], tuple[int, int]]) -> None:  # fmt: skip
    """A Ray started here (address null) has this machine's CPUs and GPUs (or ``ray.init``'s num_cpus / num_gpus):
    a run asking for more would never be scheduled."""
    cpus_here, gpus_here = resources()
    have_cpus = _launcher_value(argv, config_dir, name, "ray.init.num_cpus")
    have_gpus = _launcher_value(argv, config_dir, name, "ray.init.num_gpus")
    cluster_cpus = float(have_cpus) if _is_number(have_cpus) else cpus_here
    cluster_gpus = float(have_gpus) if _is_number(have_gpus) else gpus_here
    want_cpus = _launcher_value(argv, config_dir, name, "ray.remote.num_cpus")
    want_gpus = _launcher_value(argv, config_dir, name, "ray.remote.num_gpus")
    ask_cpus = float(want_cpus) if _is_number(want_cpus) else 1.0  # Ray's default for a task
    ask_gpus = float(want_gpus) if _is_number(want_gpus) else 0.0
    if ask_cpus <= cluster_cpus and ask_gpus <= cluster_gpus:
        return
    fits = []
    if ask_gpus > cluster_gpus:
        fits.append(f"hydra.launcher.ray.remote.num_gpus={_number_words(min(ask_gpus, cluster_gpus))}")
    if ask_cpus > cluster_cpus:
        fits.append(f"hydra.launcher.ray.remote.num_cpus={_number_words(cluster_cpus)}")
    raise ConfigError(f"hydra/launcher={name} asks each run for {_number_words(ask_gpus)} GPU and "
                      f"{_number_words(ask_cpus)} CPUs (hydra.launcher.ray.remote.num_gpus / num_cpus), but the Ray it "
                      f"starts on this machine (address null) has {_number_words(cluster_gpus)} GPUs and "
                      f"{_number_words(cluster_cpus)} CPUs, so Ray would wait forever: add {' '.join(fits)}, or send "
                      "the sweep to a cluster with hydra.launcher.ray.init.address=host:port")  # fmt: skip


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and float(text) >= 0
    except ValueError:
        return False


def _number_words(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def run_dir(argv: list[str]) -> str | None:
    """Where the run (``hydra.run.dir``) or the sweep (``hydra.sweep.dir``, with -m) will write, if the command line
    says so; None: hydra's default under the working directory."""
    multirun = bool({"-m", "--multirun"} & set(argv))
    return _override(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")


def runs_elsewhere(argv: list[str]) -> bool:
    """Whether a sweep's runs happen on other machines (SLURM, a Ray cluster at an address): this machine's memory
    and cores then say nothing about them (each job checks itself where it starts)."""
    if not {"-m", "--multirun"} & set(argv):
        return False
    name = _override(argv, "hydra/launcher")
    engine = PLUGINS.get(name or "basic", (None, "", None))[2]
    if engine == "submitit":
        return name != "submitit_local"
    return engine == "ray" and _ray_address(argv) not in ("null", "local")


def jobs_at_once(argv: list[str], runs: int, config_dir: Path = CONFIG_DIR) -> int:
    """How many runs of a local sweep share this machine at once: ``n_jobs`` of hydra/launcher=local (joblib), at most
    the sweep's ``runs``; 1 otherwise."""
    if not {"-m", "--multirun"} & set(argv):
        return 1
    name = _override(argv, "hydra/launcher")
    if name not in ("local", "joblib"):
        return 1
    n_jobs = _launcher_value(argv, config_dir, name, "n_jobs")
    cores = usable_cores()
    jobs = int(n_jobs) if n_jobs and n_jobs.lstrip("-").isdigit() else 1
    jobs = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 = all cores, -2 = all but one
    return max(1, min(jobs, runs))


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
