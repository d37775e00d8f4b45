"""The training loop with its evaluations: frames are the clock, agent steps live only here and in the agents.

One loop iteration is one agent step (``action_repeat`` frames)::

    reset if the last episode ended      (episode boundary: train.csv row, periodic snapshot)
    evaluate if frame >= next eval frame (frames 0, E, 2E, ... and once more at the end)
    action = uniform in [-1, 1]^A        while frame < num_seed_frames, else agent.act(obs, step)
    env.step_async(action)               the env worker steps physics and renders ...
    agent.update(replay.sample(B), step) ... while the agent learns (every update_every_steps agent steps)
    ts = env.step_wait(); replay.add(ts)

which is DrQ-v2's order (act, update, step), so overlapping rendering with learning changes nothing in the math.

The trainer's other jobs are parts of their own, each handed what it needs (:class:`drq.run.state.Parts`, what was
built, and :class:`drq.run.state.RunState`, the counters): :mod:`drq.run.build` builds and closes the parts,
:mod:`drq.run.resume` writes and reads snapshots (exact resume: see its docstring) and :mod:`drq.run.metrics` keeps
the metric window and writes the rows and lines.

Training episode ``k`` starts with ``reset(seed=...)`` from ``(seed, k)`` (:mod:`drq.run.seeds`).

A failing environment (its worker died or hung, or the env raised: :mod:`drq.envs.restarting`) is replaced and said
in one line (:mod:`drq.run.restarts`). The training step whose result never came is not counted; the episode it cut
ends at its newest stored step, as a truncation (``FrameReplay.truncate_episode``: the windows that reach it
bootstrap there, none reaches into the next episode), gets its train.csv row, and the next episode starts with the
next seed. An evaluation episode whose env failed is played again from its seed. An env that fails more than
``env_restart_limit`` times within ``env_restart_window_frames`` frames ends the run: a snapshot (mid-episode when an
episode or an evaluation is under way, as for a stop signal), one line, :class:`EnvKeptFailing`
(``train.py``: exit code 3).

Stop signals (``stop_signals``, default SIGINT, SIGTERM, SIGUSR1, SIGUSR2; :mod:`drq.machine.stop_signals`) only set
a flag; the loop stops at its next safe point: before the next agent step, or after the current step of an
evaluation, which is then discarded (its rows are not written and it runs again after the resume). Such a snapshot is
taken mid-episode and the resume goes on inside that episode (:mod:`drq.run.resume`). A signal after the last frame
lets the run finish.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from drq.config import schema as config_schema
from drq.config.schema import RunConfig
from drq.envs.restarting import EnvRestarted
from drq.envs.timestep import episode_over
from drq.machine import stop_signals
from drq.run import build
from drq.run import lock as run_dir_lock
from drq.run import resume
from drq.run.evaluation import EpisodesStopped, EvalProgress, episode_seeds, run_episodes
from drq.run.metrics import NonFiniteMetricError, RunLog
from drq.run.restarts import TRAIN_ENV, EnvKeptFailing
from drq.run.seeds import train_episode_seed
from drq.run.state import Parts

if TYPE_CHECKING:
    from drq.interfaces import Env

__all__ = ["EnvKeptFailing", "Trainer", "TrainingInterrupted", "NonFiniteMetricError", "run"]


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


class Trainer:
    """Builds envs, replay, agent and sinks from a checked config (:func:`drq.run.build.build`) and runs the loop in
    ``run_dir``.

    ``cfg``: a :class:`drq.config.schema.RunConfig`, or a composed config (nested dict) that is checked into one
    first (:class:`drq.config.schema.ConfigError` before anything is built). Every value comes from it: the trainer
    has no defaults of its own. The built parts are also attributes (``agent``, ``replay``, ``train_env``, ``wandb``,
    ``device``, ...), for the tests and benches."""

    def __init__(self, cfg: RunConfig | Mapping[str, Any], run_dir: str | Path,
                 say: Callable[[str], None] | None = None,
                 stop: stop_signals.StopSignals | None = None) -> None:  # fmt: skip
        """``stop``: stop-signal handlers already installed by the caller (``run`` installs them before building, so
        a signal during start-up is honoured too); by default :meth:`train` installs ``cfg.stop_signals``."""
        self.cfg = config_schema.as_config(cfg)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.say = say or _tqdm_write
        self._stop_signals = stop or stop_signals.StopSignals(stop_signals.parse(self.cfg.stop_signals))
        self._lock = run_dir_lock.acquire(self.run_dir)  # never two writers on one run dir
        self._process_settings = build.ProcessSettings.read()  # restored by close(): they are process-wide
        self.parts = Parts(self.cfg, self.run_dir, self.say)
        try:
            self.state, self.window = build.build(self.parts)
        except BaseException:  # a failed start leaves no lock held, no worker running, no setting changed
            self.close(exit_code=1)
            raise
        p = self.parts
        self.agent, self.replay, self.train_env, self.wandb = p.agent, p.replay, p.train_env, p.wandb
        self.device, self.precision_resolved, self.num_threads = p.device, p.precision_resolved, p.num_threads
        self.action_shape = p.action_shape
        self.update_every_steps = self.cfg.agent.update_every_steps
        self.log = RunLog(p.files, p.wandb, p.health, self.say, f"{self.cfg.task_name} {self.cfg.agent.name}")
        # steps below this are in the snapshot's replay files (a resume): they are never changed (_cut_episode)
        self._replay_total_on_disk = self.replay.total
        self._episode_start = time.time()

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def frame(self) -> int:
        return self.state.frame

    @property
    def eval_envs(self) -> list[Env]:
        return build.eval_envs(self.parts)

    def save_snapshot(self) -> bool:
        return resume.save_snapshot(self.parts, self.state, self.window)

    def train(self) -> None:
        """Run until ``num_train_frames``; raises :class:`NonFiniteMetricError` / :class:`TrainingInterrupted` /
        :class:`EnvKeptFailing`."""
        own_handlers = not self._stop_signals.installed
        if own_handlers:
            self._stop_signals.install()
        exit_code = 1
        try:
            self._loop()
            exit_code = 0
        except EnvKeptFailing as failing:
            exit_code = failing.exit_code
            raise self._give_up(failing) from None
        finally:
            if own_handlers:
                self._stop_signals.restore()
            self.close(exit_code)

    def _loop(self) -> None:
        c, s, stopped = self.cfg, self.state, lambda: self._stop_signals.requested is not None
        num_train_frames, num_seed_frames, batch_size = c.num_train_frames, c.num_seed_frames, c.batch_size
        bar = _progress_bar(num_train_frames, s.frame)
        try:
            while s.frame < num_train_frames:
                if s.ts is None and not self._start_episode():
                    continue  # the env failed in reset and was replaced: the next episode's seed
                if s.frame >= s.next_eval_frame and not stopped():
                    if self.evaluate() is not None:  # None: stopped by a signal, evaluated again after the resume
                        s.next_eval_frame = (s.frame // c.eval_every_frames + 1) * c.eval_every_frames
                        bar.set_postfix_str(f"eval return {s.last_eval_return:.1f}")
                if stopped():
                    self._stop()

                if s.frame < num_seed_frames:
                    action = np.random.uniform(-1.0, 1.0, self.action_shape).astype(np.float32)
                else:
                    action = self.agent.act(s.ts.observation, s.step, eval_mode=False)
                try:
                    self.train_env.step_async(action)
                    if s.frame >= num_seed_frames and s.step % self.update_every_steps == 0 and len(self.replay):
                        self.window.add(self.agent.update(self.replay.sample(batch_size), s.step))
                    ts = self.train_env.step_wait()
                except EnvRestarted:  # the env failed and was replaced (said in one line): this step never happened
                    self._cut_episode()
                    if stopped():
                        self._stop()
                    continue
                s.step += 1
                s.episode_actions.append(action)
                s.episode_reward += ts.reward
                s.episode_frames += c.action_repeat
                over = episode_over(ts, s.episode_frames, c.max_episode_frames)
                self.replay.add(frame=ts.frame, action=ts.action, reward=ts.reward, discount=ts.discount,
                                first=False, last=over)  # fmt: skip
                s.ts = ts
                bar.update(c.action_repeat)

                if s.frame >= s.next_log_frame:
                    self.log.health_line(self.window, s, self.parts.snapshot_path)
                    s.next_log_frame = (s.frame // c.log_every_frames + 1) * c.log_every_frames
                if s.frame >= s.next_histogram_frame and self.window.count_since_hist:
                    self.log.histograms(self.window, self.agent, s.frame)
                    s.next_histogram_frame = (s.frame // c.histogram_every_frames + 1) * c.histogram_every_frames

                if over:
                    self._end_episode()
                    if stopped():
                        self._stop()
        finally:
            bar.close()
        self.log.health_line(self.window, s, self.parts.snapshot_path)  # the last window, if any
        if s.frame > s.last_eval_frame and not stopped():
            self.evaluate()
        if s.frame > s.last_eval_frame:  # the final evaluation was stopped by a signal (or never started)
            self._stop()
        self.save_snapshot()

    def _start_episode(self) -> bool:
        """Reset the train env with the next episode's seed and store the first step; False if the env failed in
        the reset (it was replaced; the seed is spent, so the next try starts the episode after)."""
        s = self.state
        seed = train_episode_seed(self.cfg.seed, s.train_resets)
        s.train_resets += 1
        try:
            ts = self.train_env.reset(seed=seed)
        except EnvRestarted:
            return False
        s.start_episode(ts)
        self.replay.add(frame=ts.frame, action=ts.action, reward=ts.reward, discount=ts.discount, first=True,
                        last=False)  # fmt: skip
        self._episode_start = time.time()
        return True

    def _end_episode(self) -> None:
        """The episode is over (ended, or cut by a failing env): its train.csv row, then the periodic snapshot when
        one is due (at this episode boundary)."""
        s, c = self.state, self.cfg
        s.ts = None
        s.episode += 1
        fps = s.episode_frames / max(time.time() - self._episode_start, 1e-9)
        self.log.train_episode(s, len(self.replay), fps)
        if s.frame >= s.next_snapshot_frame:
            s.next_snapshot_frame = (s.frame // c.snapshot_every_frames + 1) * c.snapshot_every_frames
            self.save_snapshot()

    def _cut_episode(self) -> None:
        """The train env failed during the episode under way (if any): its newest stored step ends it, as a
        truncation (the windows that reach it bootstrap there), and the episode ends (its train.csv row; an episode
        cut before its first step has none and does not count). A step that a snapshot's replay files already hold
        (right after resuming inside an episode) is left as it is: the files are never changed, and the windows
        still stop at the episode's end (its last ``nstep - 1`` transitions are then not sampled)."""
        s = self.state
        if s.ts is None:
            return
        if self.replay.total > self._replay_total_on_disk:
            self.replay.truncate_episode()
        if s.episode_frames:
            self._end_episode()
        else:
            s.ts = None

    def _give_up(self, failing: EnvKeptFailing) -> EnvKeptFailing:
        """An env kept failing: cut the training episode if the train env was the one, drop what an evaluation under
        way recorded (it runs again after the resume), snapshot; the error to raise, with where the snapshot is."""
        if failing.env == TRAIN_ENV:
            self._cut_episode()
        self.parts.video.reset()
        saved = self.save_snapshot()
        where = f"snapshot {self.parts.snapshot_path}" if saved else "no snapshot (save_snapshot=false or write failed)"
        return EnvKeptFailing(f"{failing}; {where}; once the environment is fixed, resume with: python train.py "
                              f"hydra.run.dir={self.run_dir} (same overrides)", failing.env)

    def _stop(self) -> None:
        """Snapshot (mid-episode when an episode is under way) and raise :class:`TrainingInterrupted`."""
        saved, stop = self.save_snapshot(), self._stop_signals
        where = f"snapshot {self.parts.snapshot_path}" if saved else "no snapshot (save_snapshot=false or write failed)"
        raise TrainingInterrupted(f"{stop.name} at frame {self.frame:,}: {where}; resume with: python train.py "
                                  f"hydra.run.dir={self.run_dir} (same overrides)", stop.requested, stop)

    def evaluate(self) -> float | None:
        """``num_eval_episodes`` episodes with the mean action, on ``eval_workers`` environments side by side; the
        first episode is recorded (an episode whose env failed is played again, its partial video dropped). Returns
        the mean return, or None if a stop signal cut it short (nothing logged; the eval environments are then
        mid-episode, so the caller stops)."""
        s, c, video = self.state, self.cfg, self.parts.video
        video.reset()

        def record(episode: int, env: Env, reward: float, episode_return: float, frames: int) -> None:
            if episode == 0 and video.enabled:
                video.record(env.render(c.video_size), s.frame, reward, episode_return, frames)

        try:
            with EvalProgress(f"eval | frame {s.frame:,}", write=self.say) as progress:
                results = run_episodes(self.eval_envs, lambda obs: self.agent.act(obs, s.step, eval_mode=True),
                                       c.num_eval_episodes, c.action_repeat, c.max_episode_frames, on_step=record,
                                       should_stop=lambda: self._stop_signals.requested is not None,
                                       progress=progress, seeds=episode_seeds(c.seed, s.frame, c.num_eval_episodes),
                                       on_restart=lambda episode: video.reset() if episode == 0 else None)
        except EpisodesStopped:  # a stop signal: nothing of this evaluation is kept; it runs again after a resume
            video.reset()
            return None
        if video.enabled:
            path = video.save(self.run_dir / "videos" / f"eval_{s.frame}.mp4")
            if path is not None:
                self.wandb.video(s.frame, path)
            video.reset()
        mean_return = self.log.evaluation(s, [r.episode_return for r in results], [r.frames for r in results])
        s.last_eval_frame, s.last_eval_return = s.frame, mean_return
        return mean_return

    def close(self, exit_code: int = 0) -> None:
        """Close the environments (workers stop) and wandb, release the run dir's lock and restore the process-wide
        torch settings the run changed; the lock and the settings even when wandb's ``finish`` raises."""
        try:
            build.close_parts(self.parts, exit_code)
        finally:
            self._lock.release()
            self._process_settings.restore()


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


warnings.filterwarnings("default", category=RuntimeWarning, module="drq")
