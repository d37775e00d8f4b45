"""The training loop: frames are the clock, agent steps live only here and in the agents.

One loop iteration is one agent step (``action_repeat`` frames)::

    reset if the last episode ended      (episode boundary: train.csv row, periodic snapshot)
    evaluate if frame >= next eval frame (frames 0, E, 2E, ... and once more at the end)
    action = uniform in [-1, 1]^A        while frame < num_seed_frames, else agent.act(obs, step)
    env.step_async(action)               the env worker steps physics and renders ...
    agent.update(replay.sample(B), step) ... while the agent learns (every update_every_steps agent steps)
    ts = env.step_wait(); replay.add(ts)

which is DrQ-v2's order (act, update, step), so overlapping rendering with learning changes nothing in the math.

Metrics stay on the device: each update's 0-dim tensors are summed there, and the means are copied to the host once
per ``log_every_frames`` (one ``health`` line: JSONL, wandb ``health/``, the health monitor, the non-finite check).

Snapshots and exact resume. Periodic snapshots (every ``snapshot_every_frames``, and at the end of training) are taken
at an episode boundary, after the episode's train.csv row and before the next reset. They hold the agent, the replay,
the RNG states of python / numpy / torch (the replay's sampler RNG is in its own state), the counters and the log
files' positions. The environments' own RNGs (the task's ``RandomState``, in the env worker) are not read out: the env
consumes it only when an episode starts, so on resume the trainer rebuilds the train env with the run's seed and calls
``reset()`` as many times as the run had (one per train episode), which puts it in exactly the state it had. The
evaluation envs need no such thing: each evaluation episode re-seeds its env from ``(seed, frame, episode index)``
(:func:`drq.run.evaluation.episode_seeds`), whichever worker plays it. Resuming from such a snapshot therefore gives the
same frames, rows and parameters (on CPU) as a run that never stopped, with or without the async env worker.

Stop signals (``stop_signals``, default SIGINT, SIGTERM, SIGUSR1, SIGUSR2; :mod:`drq.machine.stop_signals`) only set a flag; the
loop stops at its next safe point: before the next agent step, or after the current step of an evaluation, which is
then discarded (its rows are not written and it runs again after the resume). Such a snapshot is taken mid-episode;
it also holds the episode's actions, return and frames, and the metric sums since the last ``health`` line, and the
resume replays those actions on the freshly reset environment (physics is deterministic), checks that the last
picture is the one saved, and goes on from there: the resumed run is bit-exact too. If the pictures differ (another
MuJoCo build, say), or the snapshot predates this, the interrupted episode is dropped and a new one starts (its
transitions stay in the replay): continuous, not bit-exact. A signal after the last frame lets the run finish.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from drq.config import schema as config_schema
from drq.run import provenance
from drq.run import resume_changes
from drq.run import lock as run_dir_lock
from drq.run import snapshot as snapshots
from drq.machine import stop_signals
from drq.config.schema import RunConfig
from drq.envs.pixels import episode_over
from drq.run.evaluation import EpisodesStopped, EvalProgress, episode_seeds, run_episodes
from drq.run.health import HealthMonitor
from drq.machine.memory import usable_cores
from drq.run.sinks import RunFiles, WandbSink, format_eval_line
from drq.run.video import VideoRecorder

if TYPE_CHECKING:
    from drq.interfaces import Agent, Env

LOSS_FIRST = ("critic_loss", "actor_loss", "alpha_loss")


class NonFiniteMetricError(RuntimeError):
    """Training stopped because a metric became NaN or infinite; the last good snapshot is kept."""


class TrainingInterrupted(RuntimeError):
    """A stop signal (Ctrl-C, SIGTERM, ...): a snapshot was written (when enabled) and training stopped.

    ``exit_code`` is the shell's ``128 + signal number``; :meth:`chain` calls the handler that was installed before the
    trainer's (submitit's requeue on SLURM), if any."""

    def __init__(self, message: str, signum: int | None = None, stop: "stop_signals.StopSignals | None" = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = stop_signals.exit_code(signum) if signum is not None else 130
        self._stop = stop

    def chain(self) -> None:
        if self._stop is not None:
            self._stop.chain()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_num_threads(num_threads: Any, async_env: bool) -> int:
    """``auto``: all cores for torch; with ``async_env`` on more than 4 cores, all but one (left to the env worker).

    On 2 cores, leaving one to the renderer was 1.55x slower end to end (bench/e2e.py, cartpole_swingup: 9.6 vs 14.9
    frames/s): an 84x84 render is ~11 ms per agent step, a small share of a core, and with passive OpenMP waiting
    (set by the entry points: ``drq.machine.process_tuning``) the two compete only briefly."""
    if num_threads not in (None, "auto"):
        n = int(num_threads)
        if n < 1:
            raise ValueError(f"num_threads must be 'auto' or >= 1, got {num_threads!r}")
        return n
    cores = usable_cores()
    return cores - 1 if async_env and cores > 4 else cores


def resolve_eval_workers(eval_workers: Any, num_eval_episodes: int) -> int:
    """How many environments play the evaluation episodes side by side (``drq.run.evaluation``).

    ``1``: one environment in the trainer's process (episodes one after another). ``K > 1``: ``K`` worker processes
    stepping and rendering in parallel. ``auto``: one worker per core, at most one per episode and at most 8; a
    single core gets the in-process environment. Evaluation blocks training; with Mesa's software renderer, which
    already uses every core, 2 workers on 2 cores took 1.25x less wall time (bench/eval.py, docs/benchmarks.md)."""
    if eval_workers in (None, "auto"):
        cores = usable_cores()
        return max(1, min(cores, num_eval_episodes, 8))
    if isinstance(eval_workers, bool) or not str(eval_workers).isdigit() or int(eval_workers) < 1:
        raise ValueError(f"eval_workers must be 'auto' or an integer >= 1, got {eval_workers!r}")
    return int(eval_workers)


def env_kwargs(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``drq.envs.pixels.make_env`` keyword arguments from a run config (a :class:`RunConfig`, or a composed dict)."""
    cfg = config_schema.as_config(cfg)
    return dict(task=cfg.task_name, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                seed=cfg.seed, size=cfg.image_size, camera_id=cfg.camera_id,
                fast_render=cfg.fast_render)  # fmt: skip


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


def _make_health_monitor(agent_name: str, action_dim: int, cfg: RunConfig) -> HealthMonitor:
    return HealthMonitor(agent_name, action_dim=action_dim, action_repeat=cfg.action_repeat, discount=cfg.discount)


class Trainer:
    """Builds envs, replay, agent and sinks from a checked config and runs the loop in ``run_dir``.

    ``cfg``: a :class:`drq.config.schema.RunConfig`, or a composed config (nested dict) that is checked into one
    first (:class:`drq.config.schema.ConfigError` before anything is built). Every value comes from it: the trainer
    has no defaults of its own."""

    def __init__(self, cfg: RunConfig | Mapping[str, Any], run_dir: str | Path,
                 say: Callable[[str], None] | None = None,
                 stop: stop_signals.StopSignals | None = None) -> None:  # fmt: skip
        """``stop``: stop-signal handlers already installed by the caller (``run`` installs them before building, so
        a signal during start-up is honoured too); by default :meth:`train` installs ``cfg.stop_signals``."""
        self.cfg = config_schema.as_config(cfg)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say = say or _tqdm_write
        c = self.cfg
        self._stop_signals = stop or stop_signals.StopSignals(stop_signals.parse(c.stop_signals))
        self._lock = run_dir_lock.acquire(self.run_dir)  # never two writers on one run dir
        self._process_settings = ProcessSettings.read()  # restored by close(): they are process-wide
        self.train_env: Env | None = None
        self._eval_envs: list[Env] | None = None
        self.wandb: WandbSink | None = None
        try:
            self._build()
        except BaseException:  # a failed start leaves no lock held, no worker running, no setting changed
            self._close_parts(exit_code=1)
            raise

    def _build(self) -> None:
        """Everything after the lock: settings, seeding, resume state, envs, replay, agent, sinks, counters."""
        c = self.cfg
        self.action_repeat = c.action_repeat
        self.update_every_steps = c.agent.update_every_steps
        self.max_episode_frames = c.max_episode_frames
        self.device = resolve_device(c.device)
        if self.device.startswith("cuda"):
            # TF32 matmuls/convs (fp32 runs) and cuDNN autotuning for the fixed 84x84 shapes. Not measured here (no
            # GPU was available to this project yet): see docs/gpu.md.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.num_threads = resolve_num_threads(c.num_threads, c.async_env)  # torch's intra-op threads in this run
        torch.set_num_threads(self.num_threads)
        self._resolve_precision()
        self._seed_everything(c.seed)

        # Resume source (read before anything is written, so that a bad snapshot changes nothing).
        self.snapshot_path = self.run_dir / snapshots.FILENAME
        self._resume_changes: dict[str, tuple[Any, Any]] = {}  # config keys a resume changed: (old, new)
        self._resume_state = self._load_resume_state()

        self.files = RunFiles(self.run_dir)
        self._clean_up_after_a_lost_session()
        self.train_env = self._make_train_env()
        self.num_eval_workers = resolve_eval_workers(c.eval_workers, c.num_eval_episodes)
        obs_shape = self.train_env.observation_shape
        self.action_shape = tuple(self.train_env.action_shape)
        self.replay = self._make_replay(obs_shape)
        self.agent: Agent = make_agent_from_config(c, obs_shape, self.action_shape, self.device,
                                                   self.precision_resolved)
        self.health = _make_health_monitor(c.agent.name, int(np.prod(self.action_shape)), c)
        self.video = VideoRecorder(enabled=c.save_video)

        # Counters (agent steps are the loop's own; frames = step * action_repeat).
        self.step = 0
        self.episode = 0  # finished training episodes
        self.train_resets = 0  # train env reset() calls (fast-forwarded on resume)
        self.next_eval_frame = 0
        self.last_eval_frame = -1
        self.last_eval_return = float("nan")
        self.next_snapshot_frame = c.snapshot_every_frames
        self.next_log_frame = c.log_every_frames
        self.next_histogram_frame = c.histogram_every_frames
        self.elapsed_before = 0.0  # seconds of earlier sessions of this run
        self.wandb_run_id: str | None = None
        self.in_episode_at_snapshot = False
        self._ts: Any = None  # None = the next iteration starts an episode
        self._episode_reward, self._episode_frames = 0.0, 0  # the current training episode so far
        self._episode_actions: list[np.ndarray] = []  # its actions, float32 (A,) each (mid-episode snapshots)
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_count = 0
        self._acc_count_since_hist = 0
        if self._resume_state is not None:
            self._restore(self._resume_state)
        self.sessions = self._record_session()
        self.wandb = self._make_wandb()
        self._start_time = time.time()
        if self._resume_changes:
            self._announce_resume_changes()

    # ------------------------------------------------------------------------------------------------- building
    @property
    def frame(self) -> int:
        return self.step * self.action_repeat

    @property
    def total_time(self) -> float:
        return self.elapsed_before + time.time() - self._start_time

    def config_dict(self) -> dict[str, Any]:
        """The run's config as plain python, plus what ``precision=auto`` resolved to: the snapshot's ``config`` and
        wandb's run config."""
        return {**self.cfg.to_dict(), "precision_resolved": self.precision_resolved,
                "precision_reason": self.precision_reason}  # fmt: skip

    def _resolve_precision(self) -> None:
        """``precision=auto`` -> fp32 | bf16 for this device (``drq.speed.precision``); printed, and kept in the config as
        ``precision_resolved`` / ``precision_reason`` beside it (so the snapshot and wandb's config say what ran)."""
        from drq.speed.precision import emulated_bf16_warning, resolve_precision

        asked = self.cfg.precision
        precision, reason = resolve_precision(asked, self.device)
        self.precision_resolved, self.precision_reason = precision, reason
        self.say(f"precision: {precision} ({reason})")
        warning = emulated_bf16_warning(asked, self.device)
        if warning:
            self.say(warning)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import random

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _make_train_env(self) -> Env:
        kwargs = env_kwargs(self.cfg)
        if self.cfg.async_env:
            from drq.envs.worker import AsyncEnv

            return AsyncEnv(**kwargs)
        from drq.envs.pixels import make_env

        return make_env(**kwargs)

    def _make_replay(self, obs_shape: tuple[int, ...]) -> Any:
        """The replay, its frames in RAM on the device or memory-mapped in the run dir (``replay_storage``, decided by
        :func:`drq.config.footprint.storage_decision` and said in one line), and its segment files (``RUN_DIR/replay``,
        :mod:`replay.segments`), cleaned of what a killed session left."""
        from drq.config import footprint as run_footprint
        from replay import FrameReplay
        from replay.segments import ReplayFiles, is_manifest

        c = self.cfg
        # the same estimate as the pre-run memory check (drq/config/footprint.py), so auto picks what that check passed
        storage, reason = run_footprint.storage_decision(config_schema.values(c), run_footprint.Machine.here(self.run_dir))
        self.say(f"replay: {reason}")
        self.replay_files = ReplayFiles(self.run_dir / "replay")
        resuming_here = self._resume_state is not None and Path(self._resume_state["_source"]).parent.resolve() == \
            self.run_dir.resolve()  # fmt: skip
        manifest = self._resume_state.get("replay") if resuming_here else None
        self.replay_files.clean(manifest if is_manifest(manifest) else None)  # what a killed session left
        frames_file = self.replay_files.directory / "frames.u8" if storage == "disk" else None
        # frames stay where the agent learns (uint8 on the GPU when device is cuda), or in the run dir's frames file
        return FrameReplay(capacity=c.replay_buffer_size, frame_shape=(3, *obs_shape[1:]),
                           action_shape=self.action_shape, frame_stack=c.frame_stack, nstep=c.nstep,
                           discount=c.discount, device=self.device, seed=c.seed, frames_file=frames_file)  # fmt: skip

    @property
    def eval_envs(self) -> list[Env]:
        """The evaluation environments (built on first use): one in-process env, or ``eval_workers`` workers."""
        if self._eval_envs is None:
            if self.num_eval_workers == 1:
                from drq.envs.pixels import make_env

                self._eval_envs = [make_env(**env_kwargs(self.cfg))]
            else:
                from drq.envs.worker import AsyncEnv

                self._eval_envs = [AsyncEnv(**env_kwargs(self.cfg)) for _ in range(self.num_eval_workers)]
        return self._eval_envs

    def _make_wandb(self) -> WandbSink:
        c, w = self.cfg, self.cfg.wandb
        name = w.name or f"{c.task_name}_{c.agent.name}_seed{c.seed}"
        config = {**self.config_dict(), "provenance": self.sessions[-1]}
        return WandbSink(self.run_dir, mode=w.mode, project=w.project, config=config, entity=w.entity,
                         group=w.group, tags=list(w.tags),
                         name=name, run_id=self.wandb_run_id or _wandb_id_of_earlier_session(self.run_dir),
                         say=self.say)  # fmt: skip

    def _record_session(self) -> list[dict[str, Any]]:
        """This session's provenance (versions, commit, machine, precision, threads, GL backend) appended to
        ``run.json``; returns every session so far (they go into the snapshots)."""
        resumed = self._resume_state
        record = provenance.session(self.device, self.precision_resolved, self.precision_reason,
                                    self.num_threads, getattr(self.train_env, "backend", None), self.frame,
                                    resumed["_source"] if resumed else None, self._resume_changes)  # fmt: skip
        return provenance.record_session(self.run_dir, record, earlier=(resumed or {}).get("provenance"))

    def _clean_up_after_a_lost_session(self) -> None:
        """After a kill -9: remove half-written temporary files, and, when there is no snapshot to resume from, the
        rows of the session that left none (the run starts again from frame 0, so they would repeat)."""
        for tmp in (*self.run_dir.glob(f".{snapshots.FILENAME}.tmp*"), *self.run_dir.glob("videos/.*.tmp*.mp4"),
                    *self.run_dir.glob("*.tmp"), *self.run_dir.glob(f".{provenance.FILENAME}.tmp*")):  # fmt: skip
            tmp.unlink(missing_ok=True)
        if self._resume_state is None and any(n for n in self.files.position().values()):
            self.files.truncate({})
            self.say(f"{self.run_dir} holds logs but no snapshot (an earlier session stopped before its first one): "
                     "starting from frame 0 with empty train.csv / eval.csv / metrics.jsonl")  # fmt: skip

    # --------------------------------------------------------------------------------------------------- resume
    def _load_resume_state(self) -> dict[str, Any] | None:
        resume = self.cfg.resume  # auto | never | a path (the schema maps true / false / null onto these)
        if resume == "never":
            if self.snapshot_path.exists():
                raise snapshots.SnapshotError(
                    f"{self.run_dir} already holds a snapshot and resume=never: choose another hydra.run.dir "
                    "(nothing was overwritten)"
                )
            return None
        source = self.snapshot_path if resume == "auto" else snapshots.resolve_path(resume)
        if resume == "auto" and not source.exists():
            return None
        state = snapshots.load(source)
        saved = state.get("config")
        if isinstance(saved, dict) and saved:  # a key the saved config predates: the schema's legacy value or default
            saved = config_schema.fill_saved(saved)
        # keys that cannot change within a run are refused (ResumeRefused); the others are announced after the restore
        self._resume_changes = resume_changes.check(saved or {}, self.config_dict(), source)
        if source.resolve().parent != self.run_dir.resolve():  # resume=PATH from another run dir: bring its logs
            for name in RunFiles.FILES:
                if (source.parent / name).exists() and not (self.run_dir / name).exists():
                    shutil.copyfile(source.parent / name, self.run_dir / name)
        state["_source"] = str(source)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        source = state["_source"]
        try:
            self.agent.load_state_dict(state["agent"])
        except Exception as error:  # noqa: BLE001
            raise snapshots.SnapshotError(f"snapshot {source} does not fit this agent: {error}") from None
        if state.get("replay") is not None:
            from replay.segments import is_manifest

            try:
                if is_manifest(state["replay"]):
                    self.replay_files.load(self.replay, state["replay"], Path(source).parent / "replay")
                else:  # a snapshot from before issue 22: the whole replay inside snapshot.pt
                    self.replay.load_state_dict(state["replay"])
            except Exception as error:  # noqa: BLE001
                raise snapshots.SnapshotError(f"snapshot {source} does not fit this replay: {error}") from None
        counters = state["counters"]
        for key in ("step", "episode", "train_resets", "next_eval_frame", "last_eval_frame",
                    "next_snapshot_frame", "next_log_frame", "next_histogram_frame"):  # fmt: skip
            setattr(self, key, int(counters[key]))
        self.last_eval_return = float(counters["last_eval_return"])
        self.elapsed_before = float(counters["total_time"])
        self.in_episode_at_snapshot = bool(counters["in_episode"])
        self.wandb_run_id = state.get("wandb_run_id")
        self.files.truncate(state["logger"])
        snapshots.restore_rng(state["rng"])
        acc = state.get("health_window") or {}
        self._acc = {k: v.to(self.device) for k, v in (acc.get("sums") or {}).items()}
        self._acc_count, self._acc_count_since_hist = int(acc.get("count", 0)), int(acc.get("count_since_hist", 0))
        # Fast-forward the environments' own RNGs (see the module docstring).
        ts = None
        for _ in range(self.train_resets):
            ts = self.train_env.reset()
        replayed = self._replay_interrupted_episode(ts, state.get("episode")) if self.in_episode_at_snapshot else False
        notes = [f"resumed from {source} at frame {self.frame:,} (episode {self.episode})"]
        if state.get("replay") is None:
            notes.append("the snapshot holds no replay (save_replay_in_snapshot=false): the replay starts empty")
        if self.in_episode_at_snapshot:
            notes.append(f"the interrupted episode goes on from frame {self._episode_frames} (its actions replayed)"
                         if replayed else "the snapshot was taken mid-episode: that episode is dropped and a new one "
                         "starts")  # fmt: skip
        self.say("; ".join(notes))

    def _announce_resume_changes(self) -> None:
        """One line listing every config key this session changed (old → new), a ``resume`` row in metrics.jsonl and
        a wandb point at the resume frame, so the curves show where the settings changed."""
        changed = resume_changes.describe(self._resume_changes)
        self.say(f"resumed with other settings at frame {self.frame:,}: {changed}")
        self.files.resume(self.frame, self.step, self.total_time, self._resume_changes)
        self.wandb.resume_changes(self.frame, self._resume_changes)

    def _replay_interrupted_episode(self, ts: Any, episode: Mapping[str, Any] | None) -> bool:
        """Step the freshly reset train env with the interrupted episode's actions; True if it ends on the saved
        picture (then the loop goes on inside that episode), False if the episode has to be dropped."""
        if ts is None or not episode:
            return False
        for action in episode["actions"].numpy():
            ts = self.train_env.step(action)
        if not np.array_equal(np.asarray(ts.frame), episode["last_frame"].numpy()):
            warnings.warn("replaying the interrupted episode's actions did not reproduce its last picture (another "
                          "MuJoCo or renderer?); that episode is dropped", RuntimeWarning, stacklevel=2)  # fmt: skip
            return False
        self._ts = ts
        self._episode_reward, self._episode_frames = float(episode["reward"]), int(episode["frames"])
        self._episode_actions = list(episode["actions"].numpy())
        return True

    def snapshot_state(self) -> dict[str, Any]:
        """Everything a resume needs, as state dicts and plain values (``torch.load(weights_only=True)``-safe)."""
        counters = {
            "step": self.step, "frame": self.frame, "episode": self.episode, "train_resets": self.train_resets,
            "next_eval_frame": self.next_eval_frame,
            "last_eval_frame": self.last_eval_frame, "last_eval_return": self.last_eval_return,
            "next_snapshot_frame": self.next_snapshot_frame, "next_log_frame": self.next_log_frame,
            "next_histogram_frame": self.next_histogram_frame, "total_time": self.total_time,
            "in_episode": self._ts is not None,
        }  # fmt: skip
        episode = None
        if self._ts is not None:
            actions = np.stack(self._episode_actions) if self._episode_actions else np.zeros((0, *self.action_shape))
            episode = {"actions": torch.from_numpy(actions.astype(np.float32)), "reward": self._episode_reward,
                       "frames": self._episode_frames, "last_frame": torch.from_numpy(np.array(self._ts.frame))}
        return {
            "config": self.config_dict(),
            "agent": self.agent.state_dict(),
            # the replay's new segments are written here (RUN_DIR/replay); snapshot.pt holds their manifest
            "replay": self.replay_files.save(self.replay) if self.cfg.save_replay_in_snapshot else None,
            "counters": counters,
            "rng": snapshots.capture_rng(),
            "logger": self.files.position(),
            "wandb_run_id": self.wandb.run_id,
            "provenance": self.sessions,  # run.json's sessions: what each session ran on
            "episode": episode,  # the current training episode (mid-episode snapshots), else None
            "health_window": {"sums": {k: v.detach().cpu() for k, v in self._acc.items()}, "count": self._acc_count,
                              "count_since_hist": self._acc_count_since_hist},
        }

    def save_snapshot(self) -> bool:
        if not self.cfg.save_snapshot:
            return False
        try:
            state = self.snapshot_state()
        except OSError as error:  # a replay segment could not be written: the previous snapshot stays whole
            snapshots.warn_not_written(self.snapshot_path, error)
            return False
        saved = snapshots.save(self.snapshot_path, state)
        if saved:  # segments the snapshot now on disk no longer names (evicted, superseded) go
            self.replay_files.prune(state["replay"])
        return saved

    # ----------------------------------------------------------------------------------------------------- loop
    @property
    def _stop_signal(self) -> int | None:
        """The stop signal received so far (None: keep going)."""
        return self._stop_signals.requested

    def train(self) -> None:
        """Run until ``num_train_frames``; raises :class:`NonFiniteMetricError` / :class:`TrainingInterrupted`."""
        own_handlers = not self._stop_signals.installed
        if own_handlers:
            self._stop_signals.install()
        exit_code = 1
        try:
            self._loop()
            exit_code = 0
        finally:
            if own_handlers:
                self._stop_signals.restore()
            self.close(exit_code)

    def _loop(self) -> None:
        c = self.cfg
        num_train_frames, num_seed_frames, batch_size = c.num_train_frames, c.num_seed_frames, c.batch_size
        bar = _progress_bar(num_train_frames, self.frame)
        episode_start = time.time()
        try:
            while self.frame < num_train_frames:
                if self._ts is None:
                    self._ts = self.train_env.reset()
                    self.train_resets += 1
                    self.replay.add(frame=self._ts.frame, action=self._ts.action, reward=self._ts.reward,
                                    discount=self._ts.discount, first=True, last=False)  # fmt: skip
                    self._episode_reward, self._episode_frames, episode_start = 0.0, 0, time.time()
                    self._episode_actions = []
                if self.frame >= self.next_eval_frame and self._stop_signal is None:
                    if self.evaluate() is not None:  # None: stopped by a signal, evaluated again after the resume
                        every = c.eval_every_frames
                        self.next_eval_frame = (self.frame // every + 1) * every
                        bar.set_postfix_str(f"eval return {self.last_eval_return:.1f}")
                if self._stop_signal is not None:
                    self._stop(mid_episode=True)

                if self.frame < num_seed_frames:
                    action = np.random.uniform(-1.0, 1.0, self.action_shape).astype(np.float32)
                else:
                    action = self.agent.act(self._ts.observation, self.step, eval_mode=False)
                self.train_env.step_async(action)
                if self.frame >= num_seed_frames and self.step % self.update_every_steps == 0 and len(self.replay):
                    self._accumulate(self.agent.update(self.replay.sample(batch_size), self.step))
                ts = self.train_env.step_wait()
                self.step += 1
                self._episode_actions.append(action)
                self._episode_reward += ts.reward
                self._episode_frames += self.action_repeat
                over = episode_over(ts, self._episode_frames, self.max_episode_frames)
                self.replay.add(frame=ts.frame, action=ts.action, reward=ts.reward, discount=ts.discount,
                                first=False, last=over)  # fmt: skip
                self._ts = ts
                bar.update(self.action_repeat)

                if self.frame >= self.next_log_frame:
                    self._log_health()
                    self.next_log_frame = (self.frame // c.log_every_frames + 1) * c.log_every_frames
                if self.frame >= self.next_histogram_frame and self._acc_count_since_hist:
                    self._log_histograms()
                    every = c.histogram_every_frames
                    self.next_histogram_frame = (self.frame // every + 1) * every

                if over:
                    self._ts = None
                    self.episode += 1
                    seconds = max(time.time() - episode_start, 1e-9)
                    self._log_train_episode(self._episode_reward, self._episode_frames, self._episode_frames / seconds)
                    if self.frame >= self.next_snapshot_frame:
                        every = c.snapshot_every_frames
                        self.next_snapshot_frame = (self.frame // every + 1) * every
                        self.save_snapshot()
                    if self._stop_signal is not None:
                        self._stop(mid_episode=False)
        finally:
            bar.close()
        if self._acc_count:
            self._log_health()
        if self.frame > self.last_eval_frame and self._stop_signal is None:
            self.evaluate()
        if self.frame > self.last_eval_frame:  # the final evaluation was stopped by a signal (or never started)
            self._stop(mid_episode=self._ts is not None)
        self.save_snapshot()

    def _stop(self, mid_episode: bool) -> None:
        saved = self.save_snapshot()
        where = f"snapshot {self.snapshot_path}" if saved else "no snapshot (save_snapshot=false or write failed)"
        raise TrainingInterrupted(
            f"{self._stop_signals.name} at frame {self.frame:,}: {where}; resume with: python train.py "
            f"hydra.run.dir={self.run_dir} (same overrides)", self._stop_signal, self._stop_signals)  # fmt: skip

    # ------------------------------------------------------------------------------------------------ logging
    def _accumulate(self, metrics: Mapping[str, torch.Tensor]) -> None:
        """Sum the update's 0-dim device tensors on the device (no host sync)."""
        for k, v in metrics.items():
            v = v.detach().float()
            self._acc[k] = self._acc[k] + v if k in self._acc else v.clone()
        self._acc_count += 1
        self._acc_count_since_hist += 1

    def _log_health(self) -> None:
        if not self._acc_count:
            return
        names = list(self._acc)
        means = (torch.stack([self._acc[k] for k in names]) / self._acc_count).cpu().tolist()  # the one host copy
        values = dict(zip(names, means))
        window = self._acc_count
        self._acc, self._acc_count = {}, 0
        self.files.metrics("health", self.frame, self.step, self.total_time, values)
        self.wandb.log("health", self.frame, values)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            bad.sort(key=lambda k: (k not in LOSS_FIRST, k))
            raise NonFiniteMetricError(
                f"non-finite {bad[0]} ({values[bad[0]]}) at frame {self.frame:,} (mean over the last {window} "
                f"updates; also non-finite: {', '.join(bad[1:]) or 'none'}); training stopped, the last good "
                f"snapshot is kept: {self.snapshot_path if self.snapshot_path.exists() else 'none yet'}"
            )
        for line in self.health.update(self.frame, values):
            self.say(f"health warning (frame {self.frame:,}): {line}")
            self.wandb.alert("drq health", f"{self.cfg.task_name} {self.cfg.agent.name}: {line}")

    def _log_histograms(self) -> None:
        self._acc_count_since_hist = 0
        hist = getattr(self.agent, "histograms", None) or {}
        if not hist or self.wandb.run is None:
            return
        arrays = {k: v.detach().float().flatten().cpu().numpy() for k, v in hist.items()}
        self.wandb.histograms(self.frame, arrays)

    def _log_train_episode(self, episode_reward: float, episode_frames: int, fps: float) -> None:
        row = {"frame": self.frame, "step": self.step, "episode": self.episode, "episode_reward": episode_reward,
               "episode_length": episode_frames, "fps": fps, "total_time": self.total_time}  # fmt: skip
        self.files.train_episode(row)
        values = {k: row[k] for k in ("episode", "episode_reward", "episode_length", "fps")}
        values["buffer_size"] = len(self.replay)
        self.files.metrics("train", self.frame, self.step, row["total_time"], values)
        self.wandb.log("train", self.frame, values)

    # --------------------------------------------------------------------------------------------------- eval
    def evaluate(self) -> float | None:
        """``num_eval_episodes`` episodes with the mean action, on ``eval_workers`` environments side by side; the
        first episode is recorded. Returns the mean return, or None if a stop signal cut it short (nothing logged;
        the eval environments are then mid-episode, so the caller stops)."""
        envs, episodes = self.eval_envs, self.cfg.num_eval_episodes
        size = self.cfg.video_size
        self.video.reset()

        def record(episode: int, env: Env, reward: float, episode_return: float, frames: int) -> None:
            if episode == 0 and self.video.enabled:
                self.video.record(env.render(size), self.frame, reward, episode_return, frames)

        try:
            with EvalProgress(f"eval | frame {self.frame:,}", write=self.say) as progress:
                results = run_episodes(envs, lambda obs: self.agent.act(obs, self.step, eval_mode=True), episodes,
                                       self.action_repeat, self.max_episode_frames, on_step=record,
                                       should_stop=lambda: self._stop_signal is not None, progress=progress,
                                       seeds=episode_seeds(self.cfg.seed, self.frame, episodes))  # fmt: skip
        except EpisodesStopped:  # a stop signal: nothing of this evaluation is kept; it runs again after a resume
            self.video.reset()
            return None
        if self.video.enabled:
            path = self.video.save(self.run_dir / "videos" / f"eval_{self.frame}.mp4")
            if path is not None:
                self.wandb.video(self.frame, path)
            self.video.reset()
        returns = [r.episode_return for r in results]
        lengths = [r.frames for r in results]
        mean_return = float(np.mean(returns))
        row = {"frame": self.frame, "step": self.step, "episode": self.episode, "episode_reward": mean_return,
               "episode_length": float(np.mean(lengths)), "total_time": self.total_time}  # fmt: skip
        self.files.evaluation(row)
        values = {"episode_reward": mean_return, "episode_length": row["episode_length"],
                  "episode_reward_std": float(np.std(returns)), "episode": self.episode}  # fmt: skip
        self.files.metrics("eval", self.frame, self.step, row["total_time"], values)
        self.wandb.log("eval", self.frame, values)
        self.last_eval_frame, self.last_eval_return = self.frame, mean_return
        fps = self.frame / max(self.total_time, 1e-9)
        self.say(format_eval_line(self.frame, self.step, mean_return, episodes, self.total_time, fps))
        return mean_return

    # -------------------------------------------------------------------------------------------------- close
    def close(self, exit_code: int = 0) -> None:
        """Close the environments (workers stop) and wandb, release the run dir's lock and restore the process-wide
        torch settings the run changed; the lock and the settings even when wandb's ``finish`` raises."""
        self._close_parts(exit_code)

    def _close_parts(self, exit_code: int) -> None:
        """:meth:`close` for whatever was built so far (the constructor calls it when building fails)."""
        try:
            for env in (self.train_env, *(self._eval_envs or [])):
                if env is not None:
                    try:
                        env.close()
                    except Exception:  # noqa: BLE001 -- closing must not hide the real error
                        pass
            if self.wandb is not None:
                self.wandb.finish(exit_code)
        finally:
            self._lock.release()
            self._process_settings.restore()


class ProcessSettings:
    """torch's process-wide settings a run changes (intra-op threads, TF32, cuDNN autotuning), read before and put
    back after, so that a run inside a longer process (a notebook, the tests) leaves the process as it found it."""

    def __init__(self, num_threads: int, matmul_tf32: bool, cudnn_tf32: bool, cudnn_benchmark: bool) -> None:
        self.num_threads, self.matmul_tf32 = num_threads, matmul_tf32
        self.cudnn_tf32, self.cudnn_benchmark = cudnn_tf32, cudnn_benchmark

    @classmethod
    def read(cls) -> "ProcessSettings":
        return cls(torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                   torch.backends.cudnn.benchmark)  # fmt: skip

    def restore(self) -> None:
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        torch.backends.cuda.matmul.allow_tf32 = self.matmul_tf32
        torch.backends.cudnn.allow_tf32 = self.cudnn_tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def _tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)


def _progress_bar(total: int, initial: int) -> Any:
    """tqdm over frames (frames/s, ETA; the last eval return as postfix); silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", unit_scale=True, dynamic_ncols=True, disable=None,
                smoothing=0.05, mininterval=1.0)  # fmt: skip


def run(cfg: RunConfig | Mapping[str, Any], run_dir: str | Path, say: Callable[[str], None] | None = None,
        stop: stop_signals.StopSignals | None = None) -> Trainer:  # fmt: skip
    """Build a :class:`Trainer` and train; returns it (closed) for inspection. The stop signals are handled from
    the start (a signal while the environments and the snapshot load stops the run before its first step).

    ``stop``: handlers the caller installed even earlier (``train.py``: before hydra); they are switched to
    ``cfg.stop_signals`` and left installed (the caller restores them). Otherwise ``run`` installs and restores."""
    cfg = config_schema.as_config(cfg)
    signals = stop_signals.parse(cfg.stop_signals)
    own = stop is None
    stop = stop_signals.StopSignals(signals).install() if stop is None else stop.reconfigure(signals)
    try:
        trainer = Trainer(cfg, run_dir, say=say, stop=stop)
        trainer.train()
    finally:
        if own:
            stop.restore()
    return trainer


def _wandb_id_of_earlier_session(run_dir: Path) -> str | None:
    """The id in the newest ``run_dir/wandb/[offline-]run-<time>-<id>`` folder (a session that left no snapshot)."""
    folders = sorted(run_dir.glob("wandb/*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
    return folders[-1].name.rsplit("-", 1)[1] if folders else None


warnings.filterwarnings("default", category=RuntimeWarning, module="drq")
