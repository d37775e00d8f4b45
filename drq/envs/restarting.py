"""An environment that is replaced by a fresh one when it fails, so that a run rides through a dying worker.

``RestartingEnv(make, name, on_failure)`` holds ``make()`` (an in-process env or a :class:`drq.envs.worker.AsyncEnv`)
and has its interface (:class:`drq.interfaces.Env`). The first env is built in the constructor and its errors
propagate: a run that cannot build its environment at all stops there. After that, any exception from a call of the
env -- its worker died, closed its pipe or did not answer in time (:class:`drq.envs.worker.WorkerLost`), or the env
itself raised (dm_control's ``PhysicsError``, a user environment's own error) -- is a *failure*:

1. what is left of the env is closed (a worker is reaped);
2. ``on_failure(name, reason)`` is called with one sentence saying what happened (:func:`describe_failure`); it reports
   and counts the failure and may raise to give up (the run's restart limit: :mod:`drq.run.restarts`);
3. a new env is built with ``make()`` (a failure to build it is one more failure: back to 2);
4. :class:`EnvRestarted` is raised from the call: its result never came, the episode under way is lost, and the new
   env waits for ``reset``. The caller decides what the lost episode means (the trainer stores it as truncated and
   starts the next one; an evaluation plays it again from its seed).

The wrapper adds one method call and a ``try`` per env call: nothing on the hot path waits or copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NoReturn

from drq.envs.worker import WorkerLost

if TYPE_CHECKING:
    import numpy as np

    from drq.envs.timestep import TimeStep
    from drq.interfaces import Env

__all__ = ["EnvRestarted", "RestartingEnv", "describe_failure"]

_REASON_CHARS = 300  # an exception's message is cut here, so that the line stays one line


class EnvRestarted(Exception):
    """The environment failed and a fresh one replaced it: the call's result never came and the episode under way
    is lost; the new environment needs ``reset``. ``env``: the environment's name; ``reason``: what happened."""

    def __init__(self, env: str, reason: str) -> None:
        super().__init__(f"{env} restarted: {reason}")
        self.env, self.reason = env, reason


def describe_failure(error: BaseException, env: str) -> str:
    """One line saying what went wrong with ``env`` (its name): a lost worker's own sentence (``'train env worker
    (pid 4242) was killed by SIGKILL during step; its last stderr line: ...'``: which worker, its exit code or
    signal, the last line it wrote to stderr), else ``'<env> raised <type>: <first line of its message>'``."""
    if isinstance(error, WorkerLost):
        return str(error)
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > _REASON_CHARS:
        message = message[: _REASON_CHARS - 3] + "..."
    return f"{env} raised {type(error).__name__}" + (f": {message}" if message else "")


class RestartingEnv:
    """``make()``'s environment, replaced by a new ``make()`` when a call of it fails (see the module docstring).

    ``name``: how lines name it (``'train env'``, ``'eval env 1'``). ``on_failure(name, reason)``: called once per
    failure before the new env is built; whatever it raises ends the restarts (this env is then closed for good)."""

    def __init__(self, make: Callable[[], Env], name: str, on_failure: Callable[[str, str], None]) -> None:
        self._make, self.name, self._on_failure = make, name, on_failure
        self._env: Env | None = make()
        env = self._env
        self.observation_shape, self.action_shape = tuple(env.observation_shape), tuple(env.action_shape)
        self.action_low, self.action_high = env.action_low, env.action_high
        self.backend = getattr(env, "backend", None)  # the GL backend the env picked (run.json)

    @property
    def env(self) -> Env:
        """The environment now in use (a new object after each restart)."""
        if self._env is None:
            raise RuntimeError(f"{self.name} is closed")
        return self._env

    def reset(self, seed: int | None = None) -> TimeStep:
        try:
            return self.env.reset(seed=seed)
        except Exception as error:  # noqa: BLE001 -- any failure of the env is ridden through (module docstring)
            self._replace(error)

    def step_async(self, action: np.ndarray) -> None:
        try:
            self.env.step_async(action)
        except Exception as error:  # noqa: BLE001
            self._replace(error)

    def step_wait(self) -> TimeStep:
        try:
            return self.env.step_wait()
        except Exception as error:  # noqa: BLE001
            self._replace(error)

    def step(self, action: np.ndarray) -> TimeStep:
        self.step_async(action)
        return self.step_wait()

    def render(self, size: int = 256) -> np.ndarray:
        try:
            return self.env.render(size)
        except Exception as error:  # noqa: BLE001
            self._replace(error)

    def _replace(self, error: Exception) -> NoReturn:
        if self._env is None:  # closed, or given up: not a failure of the env
            raise error
        reason = describe_failure(error, self.name)
        self._close_env()
        while True:
            self._on_failure(self.name, reason)  # may raise: then this env stays closed
            try:
                self._env = self._make()
                break
            except Exception as build_error:  # noqa: BLE001 -- a new env that cannot start is one more failure
                reason = f"starting a new {self.name} failed: {describe_failure(build_error, self.name)}"
        raise EnvRestarted(self.name, reason) from error

    def _close_env(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 -- a broken env may fail to close; it is dropped either way
                pass

    def close(self) -> None:
        """Close the environment in use (its worker stops)."""
        self._close_env()

    def __enter__(self) -> RestartingEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
