"""Shared test setup: the entry points' process settings and the MuJoCo GL backend, before any test imports torch
or dm_control; helpers several tests use."""

from __future__ import annotations

import copy
import os
from typing import Any

os.environ.setdefault("WANDB_SILENT", "true")
# The pre-run memory check (drq.config.footprint) compares a config with the machine's free RAM, which varies with what
# else runs; tests see a large machine, and tests/test_memory_check.py makes it small where it means to.
os.environ.setdefault("DRQ_MEMORY_LIMIT", "1T")
os.environ.setdefault("DRQ_DISK_LIMIT", "1T")  # and a large disk: its free space moves while other work writes

from drq.machine.process_tuning import tune_process  # noqa: E402

tune_process()  # the test session runs as train.py does (huge pages, passive OpenMP waiting, glibc keeping memory)

from drq.envs.rendering import setup_rendering  # noqa: E402

setup_rendering()

import pytest  # noqa: E402
import torch  # noqa: E402

# ------------------------------------------------------------------------------------------- pytest-xdist (make test)
# `make test` runs the suite on 2 workers, one test file at a time each (`-n 2 --dist loadfile`): a file's tests share
# its module fixtures (and test_trainer.py the session's debug run, :func:`debug_run`), so each is built once.
# (xdist's loadgroup would be finer, but with pytest 9 it silently stops grouping: it renames items through a private
# attribute that pytest 9 no longer reads.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: a second torch thread per worker only adds contention

# The files whose tests take longest (training runs, train.py processes), longest first: under xdist they start first,
# so that no worker is left with a long file at the end while the other idles (measured with --durations).
LONGEST_FILES = ("test_trainer.py", "test_preemption.py", "test_gpu_check.py", "test_reproducibility.py",
                 "test_report.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Under xdist (``--no-loadscope-reorder``: files go to the workers in this order), :data:`LONGEST_FILES` first,
    then the other files with slow-marked tests, then the rest; each file's tests keep their order. A plain run keeps
    the files' order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {item.path.name for item in items if item.get_closest_marker("slow")}

    def rank(name: str) -> int:
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES) + (name not in slow_files)

    items.sort(key=lambda item: rank(item.path.name))  # stable: each file's tests, and files of one rank, in order


def flat_state(state: Any) -> dict[str, Any]:
    """Every leaf of a nested state (dicts, lists, tuples, e.g. a snapshot or ``agent.state_dict()``) under its dotted
    path (``.critic.Q1.0.weight``, ``.critic_opt.param_groups.0.lr``): tensors detached and on the CPU, other leaves
    (numbers, strings, None) as they are."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, torch.Tensor):
            flat[prefix] = node.detach().cpu()
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = node

    walk("", state)
    return flat


def assert_same_state(a: Any, b: Any, what: str = "state") -> int:
    """Assert two nested states are equal leaf by leaf: the same paths, tensors of the same dtype and shape with the
    same bits (``torch.equal``), other leaves ``==``. Returns how many tensors were compared (callers assert it is
    more than a handful, so that an empty state cannot pass)."""
    fa, fb = flat_state(a), flat_state(b)
    assert fa.keys() == fb.keys(), f"{what}: paths differ: {sorted(fa.keys() ^ fb.keys())[:10]}"
    tensors = 0
    for k, va in fa.items():
        vb = fb[k]
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), f"{what}: {k}"
            tensors += 1
        else:
            assert va == vb, f"{what}: {k}: {va!r} != {vb!r}"
    return tensors


# ------------------------------------------------------------------------------------ one shared finished debug run
DEBUG_RUN_OVERRIDES = ("preset=debug", "task=cartpole_swingup", "wandb.mode=disabled", "agent=drqv2", "async_env=true",
                       "num_train_frames=1200", "eval_every_frames=600", "snapshot_every_frames=600",
                       "num_eval_episodes=3", "eval_workers=2", "save_video=false")  # fmt: skip
"""The shared run's config: DrQ-v2 on the debug preset, shortened to 1200 frames (6 episodes; updates from frame 400,
evaluations and snapshots at 0, 600 and 1200), the training env in its worker and three evaluation episodes on two
eval workers; no video, no wandb."""


class FinishedRun:
    """A finished in-process training run: ``trainer`` (closed, returned by ``drq.run.trainer.run``), its ``run_dir`` and
    the composed ``cfg`` it ran with. Readers only: a test that changes a run starts its own."""

    def __init__(self, trainer: Any, run_dir: Any, cfg: dict) -> None:
        self.trainer, self.run_dir, self.cfg = trainer, run_dir, cfg


def compose_debug(*overrides: str, base: tuple[str, ...] = ()) -> dict:
    """The composed config (cfgs/ through hydra, as train.py composes it) for ``base`` then ``overrides``."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=[*base, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory) -> FinishedRun:
    """One short debug-preset run for the whole test session (~6 s of CPU), shared by every check that only reads a
    finished run (:data:`DEBUG_RUN_OVERRIDES`)."""
    from drq.run import trainer

    cfg = compose_debug(base=DEBUG_RUN_OVERRIDES)
    run_dir = tmp_path_factory.mktemp("debug_run")
    return FinishedRun(trainer.run(cfg, run_dir, say=lambda s: None), run_dir, cfg)


class SnapshotCrash(Exception):
    """Stands for SIGKILL right after a periodic snapshot (:func:`crash_after_snapshot`)."""


def crash_after_snapshot(frame: int) -> Any:
    """A context manager in which a trainer's first snapshot at ``frame`` frames or later is written whole, then
    :class:`SnapshotCrash` is raised: the run dir is left as a kill -9 right after that snapshot would leave it."""
    import contextlib

    from drq.run import snapshot

    @contextlib.contextmanager
    def crashing() -> Any:
        real_save = snapshot.save

        def save_then_crash(path: Any, state: dict) -> bool:
            ok = real_save(path, state)
            if state["counters"]["frame"] >= frame:
                raise SnapshotCrash
            return ok

        snapshot.save = save_then_crash
        try:
            yield
        finally:
            snapshot.save = real_save

    return crashing()


def run_module_as_main(module: str, *args: str) -> tuple[int, str, str]:
    """``python -m module args`` inside this process (``runpy``, as ``-m`` runs it): (exit code, stdout, stderr).

    For a command line's exit code and messages where a fresh interpreter is not the point (an import's side effects
    or a signal would be). An exception escaping the module propagates: the test fails with its traceback."""
    import contextlib
    import io
    import runpy
    import sys
    import warnings

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    sys.argv = [module, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules ... prior to execution"
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def with_value(cfg: dict, dotted: str, value: object) -> dict:
    """A deep copy of the composed config ``cfg`` with the key ``dotted`` (``'agent.lr'``) set to ``value``."""
    cfg = copy.deepcopy(cfg)
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    return cfg
