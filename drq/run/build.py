"""Building a run's parts from a checked config, in order, and closing whatever was built.

:func:`build` fills a :class:`drq.run.state.Parts` one part at a time: torch settings, precision and seeding, the
snapshot to resume from (read before anything is written), the log files, the record of failed environments
(:mod:`drq.run.restarts`), the train env (a worker process with ``async_env``; a
:class:`drq.envs.restarting.RestartingEnv`, as each eval env is, so that a failing env is replaced), the replay, the
agent, the health monitor and video recorder, the restored counters, this session's run.json record and the wandb
sink. If any step raises, the caller hands the same ``Parts`` to :func:`close_parts`, which closes exactly what exists
(the env worker stops), so a failed start leaves nothing running.
"""

from __future__ import annotations

import functools
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from drq.config import footprint as run_footprint
from drq.config import schema as config_schema
from drq.config.schema import RunConfig
from drq.envs.restarting import RestartingEnv
from drq.machine.memory import format_size, usable_cores
from drq.run import provenance
from drq.run import resume
from drq.run import snapshot as snapshots
from drq.run.health import HealthMonitor
from drq.run.metrics import MetricWindow
from drq.run.restarts import TRAIN_ENV, EnvRestarts, eval_env_name
from drq.run.sinks import RunFiles, WandbSink
from drq.run.state import Parts, RunState
from drq.run.video import VideoRecorder

if TYPE_CHECKING:
    from drq.interfaces import Agent, Env


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_num_threads(num_threads: int | str, async_env: bool) -> int:
    """``auto``: all cores for torch; with ``async_env`` on more than 4 cores, all but one (left to the env worker).

    On 2 cores, leaving one to the renderer was 1.55x slower end to end (bench/e2e.py, cartpole_swingup: 9.6 vs 14.9
    frames/s): an 84x84 render is ~11 ms per agent step, a small share of a core, and with passive OpenMP waiting
    (set by the entry points: ``drq.machine.process_tuning``) the two compete only briefly."""
    if num_threads != "auto":
        return int(num_threads)  # checked by the schema (an integer >= 1)
    cores = usable_cores()
    return cores - 1 if async_env and cores > 4 else cores


def env_kwargs(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``drq.envs.pixels.make_env`` keyword arguments from a run config (a :class:`RunConfig`, or a composed dict)."""
    cfg = config_schema.as_config(cfg)
    return dict(task=cfg.task_name, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                seed=cfg.seed, size=cfg.image_size, camera_id=cfg.camera_id,
                fast_render=cfg.fast_render)  # fmt: skip


def gym_env_kwargs(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``drq.envs.gym_pixels.GymPixelEnv`` keyword arguments from a run config with ``task=gym``."""
    cfg = config_schema.as_config(cfg)
    return dict(env_id=cfg.gym.id, kwargs=dict(cfg.gym.kwargs), pixels=cfg.gym.pixels, frame_stack=cfg.frame_stack,
                action_repeat=cfg.action_repeat, seed=cfg.seed, size=cfg.image_size)  # fmt: skip


def env_factory(cfg: RunConfig | Mapping[str, Any], **overrides: Any) -> Callable[[], Env]:
    """The run's environment as a picklable zero-argument factory (``functools.partial``): called here for an
    in-process env, sent to :class:`drq.envs.worker.AsyncEnv` for a worker. ``overrides``: keyword arguments that
    replace the config's (``seed=`` for ``drq.evaluate``). A DMC task, or with ``task=gym`` (``gym.id`` set) a
    Gymnasium env."""
    cfg = config_schema.as_config(cfg)
    if cfg.gym.id is not None:
        from drq.envs.gym_pixels import GymPixelEnv  # the class only: the env's module is imported when it is built

        return functools.partial(GymPixelEnv, **{**gym_env_kwargs(cfg), **overrides})
    from drq.envs.pixels import PixelEnv  # the class only: dm_control is imported when it is built

    return functools.partial(PixelEnv, **{**env_kwargs(cfg), **overrides})


def make_agent_from_config(cfg: RunConfig | Mapping[str, Any], obs_shape: tuple[int, ...],
                           action_shape: tuple[int, ...], device: str,
                           precision: str | None = None) -> Agent:  # fmt: skip
    """``drq.agents.make_agent(cfg.agent.name, ...)`` with the rest of ``cfg.agent`` as keyword arguments;
    ``precision``: the resolved one (default ``cfg.precision``, which make_agent resolves)."""
    from drq.agents import make_agent

    cfg = config_schema.as_config(cfg)
    return make_agent(cfg.agent.name, obs_shape=tuple(obs_shape), action_shape=tuple(action_shape), device=device,
                      precision=precision or cfg.precision, compile=cfg.compile, cuda_graphs=cfg.cuda_graphs,
                      **cfg.agent.kwargs())  # fmt: skip


class ProcessSettings:
    """torch's process-wide settings a run changes (intra-op threads, TF32, cuDNN autotuning), read before and put
    back after, so that a run inside a longer process (a notebook, the tests) leaves the process as it found it."""

    def __init__(self, num_threads: int, matmul_tf32: bool, cudnn_tf32: bool, cudnn_benchmark: bool) -> None:
        self.num_threads, self.matmul_tf32 = num_threads, matmul_tf32
        self.cudnn_tf32, self.cudnn_benchmark = cudnn_tf32, cudnn_benchmark

    @classmethod
    def read(cls) -> ProcessSettings:
        return cls(torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                   torch.backends.cudnn.benchmark)  # fmt: skip

    def restore(self) -> None:
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        torch.backends.cuda.matmul.allow_tf32 = self.matmul_tf32
        torch.backends.cudnn.allow_tf32 = self.cudnn_tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def _worker(cfg: RunConfig, name: str) -> Env:
    """The run's environment in a worker process named ``name``, with the config's timeouts."""
    from drq.envs.worker import AsyncEnv

    return AsyncEnv(env_factory(cfg), name=name, timeout_s=cfg.env_timeout_seconds,
                    start_timeout_s=cfg.env_start_timeout_seconds)  # fmt: skip


def make_train_env(cfg: RunConfig) -> Env:
    """The training environment: a worker process (``async_env``) or one in this process."""
    return _worker(cfg, TRAIN_ENV) if cfg.async_env else env_factory(cfg)()


def eval_envs(parts: Parts) -> list[Env]:
    """The evaluation environments (built on first use): one in-process env, or ``eval_workers`` workers; each
    replaced by a new one when it fails (:class:`drq.envs.restarting.RestartingEnv`)."""
    if parts.eval_envs is None:
        cfg, workers = parts.cfg, parts.num_eval_workers

        def make(name: str) -> Env:
            return env_factory(cfg)() if workers == 1 else _worker(cfg, name)

        parts.eval_envs = [RestartingEnv(functools.partial(make, eval_env_name(k)), eval_env_name(k),
                                         parts.restarts.failed) for k in range(workers)]  # fmt: skip
    return parts.eval_envs


def build(parts: Parts) -> tuple[RunState, MetricWindow]:
    """Fill ``parts`` (see the module docstring) and return the counters and metric window to start from (restored
    from the snapshot when resuming). Changes torch's process-wide settings: the caller restores them."""
    c = parts.cfg
    parts.device = resolve_device(c.device)
    if parts.device.startswith("cuda"):
        # TF32 matmuls/convs (fp32 runs) and cuDNN autotuning for the fixed 84x84 shapes. Not measured here (no
        # GPU was available to this project yet): see docs/gpu.md.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    parts.num_threads = resolve_num_threads(c.num_threads, c.async_env)
    torch.set_num_threads(parts.num_threads)
    _resolve_precision(parts)
    random.seed(c.seed)
    np.random.seed(c.seed)
    torch.manual_seed(c.seed)

    saved = resume.load_resume_state(parts)  # before anything is written: a bad snapshot changes nothing
    parts.files = RunFiles(parts.run_dir)
    _clean_up_after_a_lost_session(parts, resuming=saved is not None)
    state = RunState(action_repeat=c.action_repeat, next_snapshot_frame=c.snapshot_every_frames,
                     next_log_frame=c.log_every_frames, next_histogram_frame=c.histogram_every_frames)  # fmt: skip
    parts.restarts = EnvRestarts(parts, state)
    parts.train_env = RestartingEnv(lambda: make_train_env(c), TRAIN_ENV, parts.restarts.failed)
    parts.num_eval_workers = run_footprint.eval_workers_resolved(c.eval_workers, c.num_eval_episodes, usable_cores())
    obs_shape = parts.observation_shape = tuple(parts.train_env.observation_shape)
    parts.action_shape = tuple(parts.train_env.action_shape)
    parts.replay = _make_replay(parts, obs_shape, saved)
    parts.agent = make_agent_from_config(c, obs_shape, parts.action_shape, parts.device, parts.precision_resolved)
    parts.health = HealthMonitor(c.agent.name, action_dim=int(np.prod(parts.action_shape)),
                                 action_repeat=c.action_repeat, discount=c.discount)  # fmt: skip
    parts.video = VideoRecorder(enabled=c.save_video)

    window = MetricWindow()
    if saved is not None:
        resume.restore(parts, state, window, saved)
    resume.clean_replay_folder(parts, saved)  # once the snapshot resumed from is known whole
    parts.sessions = _record_session(parts, state, saved)
    parts.wandb = _make_wandb(parts, state)
    state.start_time = time.time()
    if parts.resume_changes:
        resume.announce_changes(parts, state)
    return state, window


def close_parts(parts: Parts, exit_code: int) -> None:
    """Close the environments (workers stop) and wandb, for whatever was built so far; an env that fails to close
    does not hide the real error. wandb's ``finish`` may raise: the caller releases the lock in a ``finally``."""
    for env in (parts.train_env, *(parts.eval_envs or [])):
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 -- closing must not hide the real error
                pass
    if parts.replay is not None and parts.replay.storage == "disk":  # scratch: a resume rebuilds it from the segments
        try:  # (the memory map stays readable until the replay is dropped; the disk space is then freed)
            parts.replay.frames_file.unlink(missing_ok=True)
        except OSError as error:
            warnings.warn(str(snapshots.RunDirError.of("delete", error)), RuntimeWarning, stacklevel=2)
    if parts.wandb is not None:
        parts.wandb.finish(exit_code)


def _resolve_precision(parts: Parts) -> None:
    """``precision=auto`` -> fp32 | bf16 for this device (``drq.speed.precision``); said, and kept in the config
    as ``precision_resolved`` / ``precision_reason`` (so the snapshot and wandb's config say what ran)."""
    from drq.speed.precision import emulated_bf16_warning, resolve_precision

    asked = parts.cfg.precision
    parts.precision_resolved, parts.precision_reason = resolve_precision(asked, parts.device)
    parts.say(f"precision: {parts.precision_resolved} ({parts.precision_reason})")
    warning = emulated_bf16_warning(asked, parts.device)
    if warning:
        parts.say(warning)


def _make_replay(parts: Parts, obs_shape: tuple[int, ...], saved: Mapping[str, Any] | None) -> Any:
    """The replay, its frames in RAM on the device or memory-mapped in the run dir (``replay_storage``, decided by
    :func:`drq.config.footprint.storage_decision` and said in one line; the frames file's blocks allocated now, so a
    disk too small is one line here), and its segment files (``RUN_DIR/replay``, :mod:`replay.segments`, set as
    ``parts.replay_files``; the snapshots that name them: ``parts.snapshots_here``). Nothing is deleted here: what
    a killed session left goes once the snapshot resumed from is known whole (:func:`resume.clean_replay_folder`)."""
    from replay import FrameReplay
    from replay.segments import ReplayFiles

    c, run_dir = parts.cfg, parts.run_dir
    # the same estimate as the pre-run memory check (drq/config/footprint.py), so auto picks what that check passed
    storage, reason = run_footprint.storage_decision(config_schema.values(c), run_footprint.Machine.here(run_dir))
    parts.say(f"replay: {reason}")
    parts.replay_files = ReplayFiles(run_dir / "replay")
    parts.snapshots_here = snapshots.SnapshotsHere(run_dir, ReplayFiles.names)
    frames_file = parts.replay_files.frames_file if storage == "disk" else None
    try:  # frames stay where the agent learns (uint8 on the GPU when device is cuda), or in the run dir's frames file
        return FrameReplay(capacity=c.replay_buffer_size, frame_shape=(3, *obs_shape[1:]),
                           action_shape=parts.action_shape, frame_stack=c.frame_stack, nstep=c.nstep,
                           discount=c.discount, device=parts.device, seed=c.seed, frames_file=frames_file)  # fmt: skip
    except OSError as error:
        size = format_size(run_footprint.replay_slots(config_schema.values(c)) * 3 * obs_shape[1] * obs_shape[2])
        raise snapshots.RunDirError(f"{snapshots.RunDirError.of('create the replay frames file', error)}: it needs "
                                    f"{size} there (replay_storage=ram keeps the frames in memory); nothing was "
                                    "deleted") from None


def _clean_up_after_a_lost_session(parts: Parts, resuming: bool) -> None:
    """After a kill -9: remove half-written temporary files, and, when there is no snapshot to resume from, the
    rows of the session that left none (the run starts again from frame 0, so they would repeat)."""
    run_dir = parts.run_dir
    for tmp in (*run_dir.glob(f".{snapshots.FILENAME}.tmp*"), *run_dir.glob("videos/.*.tmp*.mp4"),
                *run_dir.glob("*.tmp"), *run_dir.glob(f".{provenance.FILENAME}.tmp*")):  # fmt: skip
        tmp.unlink(missing_ok=True)
    if not resuming and any(n for n in parts.files.position().values()):
        parts.files.truncate({})
        parts.say(f"{run_dir} holds logs but no snapshot (an earlier session stopped before its first one): "
                  "starting from frame 0 with empty train.csv / eval.csv / metrics.jsonl")  # fmt: skip


def _record_session(parts: Parts, state: RunState, saved: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """This session's provenance (versions, commit, machine, precision, threads, GL backend) appended to
    ``run.json``, and the run's ``run`` record (task, agent, shapes, |A|, config); returns every session so far (they
    go into the snapshots)."""
    record = provenance.session(parts.device, parts.precision_resolved, parts.precision_reason, parts.num_threads,
                                getattr(parts.train_env, "backend", None), state.frame,
                                saved["_source"] if saved else None, parts.resume_changes)  # fmt: skip
    env = provenance.env_record(parts.config_dict(), parts.observation_shape, parts.train_env.action_low,
                                parts.train_env.action_high)  # what a deployment needs (drq.load_policy)
    run = provenance.run_record(parts.config_dict(), parts.observation_shape, parts.action_shape, env)  # drq.analysis
    return provenance.record_session(parts.run_dir, record, earlier=(saved or {}).get("provenance"), run=run)


def _make_wandb(parts: Parts, state: RunState) -> WandbSink:
    c, w = parts.cfg, parts.cfg.wandb
    name = w.name or f"{c.task_name}_{c.agent.name}_seed{c.seed}"
    config = {**parts.config_dict(), "provenance": parts.sessions[-1]}
    return WandbSink(parts.run_dir, mode=w.mode, project=w.project, config=config, entity=w.entity,
                     group=w.group, tags=list(w.tags),
                     name=name, run_id=state.wandb_run_id or _wandb_id_of_earlier_session(parts.run_dir),
                     say=parts.say)  # fmt: skip


def _wandb_id_of_earlier_session(run_dir: Path) -> str | None:
    """The id in the newest ``run_dir/wandb/[offline-]run-<time>-<id>`` folder (a session that left no snapshot)."""
    folders = sorted(run_dir.glob("wandb/*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    return folders[-1].name.rsplit("-", 1)[1] if folders else None
