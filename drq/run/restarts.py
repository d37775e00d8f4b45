"""What the run does when an environment fails: one line, a count, a fresh environment -- and a limit.

The training env and each evaluation env are :class:`drq.envs.restarting.RestartingEnv`s (built by
:mod:`drq.run.build`), which call :meth:`EnvRestarts.failed` when their env fails (its worker died, hung or the env
raised; see that module) and then start a new one. :meth:`EnvRestarts.failed`:

- says it in one line, with the frame, the env, the reason and what happens next::

      env restart (frame 872): train env worker (pid 3329) was killed by SIGKILL during step; a new train env
      goes on with the next episode (restart 1 of at most 3 of this env within 12,000 frames)

- counts it: ``RunState.worker_restarts`` (snapshotted; every ``train`` line of metrics.jsonl and wandb's
  ``train/worker_restarts``) and one ``restart`` line in metrics.jsonl (frame, env, reason);
- gives up when one env has failed more than ``env_restart_limit`` times within ``env_restart_window_frames`` frames
  of training: it raises :class:`EnvKeptFailing`; the trainer then writes a snapshot, says what kept failing in one
  line, and ``train.py`` exits with :data:`EXIT_CODE`.

The limit counts each env on its own (``train env``, ``eval env 0`` ...), so that the kernel's OOM killer taking all
eval workers at once is one failure of each, while an env that fails at every start, or an evaluation episode that
fails every time it is played, reaches the limit within one window.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drq.run.state import Parts, RunState

__all__ = ["EXIT_CODE", "TRAIN_ENV", "EnvKeptFailing", "EnvRestarts", "eval_env_name"]

EXIT_CODE = 3
"""``train.py``'s exit status when an environment kept failing (0 done, 1 an error, 2 a bad config, 128 + n a stop
signal): a SLURM array or a sweep shows these runs apart."""
TRAIN_ENV = "train env"


def eval_env_name(index: int) -> str:
    """The name of evaluation env ``index`` (from 0) in lines and metrics.jsonl."""
    return f"eval env {index}"


class EnvKeptFailing(RuntimeError):
    """An environment failed more than ``env_restart_limit`` times within ``env_restart_window_frames`` frames.
    ``env``: its name; ``exit_code``: :data:`EXIT_CODE`."""

    exit_code = EXIT_CODE

    def __init__(self, message: str, env: str) -> None:
        super().__init__(message)
        self.env = env


class EnvRestarts:
    """The run's record of failed environments (see the module docstring). ``state``: the counters (the frame of a
    failure, the running count); ``parts``: the config (limit, window), ``say``, the log files and wandb (once
    built)."""

    def __init__(self, parts: Parts, state: RunState) -> None:
        self.parts, self.state = parts, state
        self.limit, self.window_frames = parts.cfg.env_restart_limit, parts.cfg.env_restart_window_frames
        self._recent: dict[str, deque[int]] = {}  # env -> frames of its failures within the window

    def failed(self, env: str, reason: str) -> None:
        """Record a failure of ``env`` at the current frame; raise :class:`EnvKeptFailing` past the limit, else say
        it, count it and return (the caller then starts a new env)."""
        s, frame = self.state, self.state.frame
        recent = self._recent.setdefault(env, deque())
        recent.append(frame)
        while recent[0] <= frame - self.window_frames:
            recent.popleft()
        if len(recent) > self.limit:
            raise EnvKeptFailing(f"{env} failed {len(recent)} times within {self.window_frames:,} frames "
                                 f"(env_restart_limit={self.limit}), the last at frame {frame:,}: {reason}", env)
        s.worker_restarts += 1
        then = (f"a new {env} goes on with the next episode" if env == TRAIN_ENV else
                f"a new {env} plays its evaluation episode again from the same seed")  # fmt: skip
        self.parts.say(f"env restart (frame {frame:,}): {reason}; {then} (restart {len(recent)} of at most "
                       f"{self.limit} of this env within {self.window_frames:,} frames)")
        self.parts.files.restart(frame, s.step, s.total_time, env, reason, s.worker_restarts)
        if self.parts.wandb is not None:
            self.parts.wandb.log("train", frame, {"worker_restarts": s.worker_restarts})
