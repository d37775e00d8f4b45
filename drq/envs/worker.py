"""A pixel environment in a worker process, so the next frame renders while the agent updates.

``AsyncEnv(factory)`` runs ``factory()`` (a picklable callable returning an env with drq's interface,
:class:`drq.interfaces.Env`, e.g. ``functools.partial(PixelEnv, task="walker_walk")``: :func:`drq.run.build.env_factory`
makes the run's) in the worker; ``AsyncEnv(**make_env_kwargs)`` is ``AsyncEnv(functools.partial(PixelEnv,
**make_env_kwargs))``. It has the interface of the env it runs; the trainer calls
``env.step_async(action)``, runs ``agent.update(...)``, then ``env.step_wait()``. Physics and rendering happen in the
worker in between. The worker is started with the ``spawn`` method (a fresh interpreter: no forked GL or torch
state), picks its GL backend itself, and exits when told, when the parent's end of the pipe closes, or at interpreter
exit (``weakref.finalize``).

Signals: the worker is started with the stop signals blocked and then ignores SIGINT, SIGTERM, SIGHUP, SIGUSR1 and
SIGUSR2 (:func:`drq.machine.stop_signals.ignore_in_child`), so a signal sent to the whole process group (SLURM, ``timeout``,
Ctrl-C) reaches only the trainer, which snapshots and then closes its workers. It never outlives the trainer: on Linux
the kernel sends it SIGKILL when the process that started it dies (``PR_SET_PDEATHSIG``; requested only when the
``AsyncEnv`` is built in the main thread, since the kernel watches the creating thread), and anywhere it exits when
its pipe reports the parent gone. Exceptions raised in the worker are re-raised in the parent with their type and message
(the worker traceback is attached as a note).

As with any ``spawn`` worker, a script that creates an ``AsyncEnv`` at import time must guard its entry point with
``if __name__ == "__main__":`` (the worker re-imports the main module).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import threading
import traceback
import weakref
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from drq.machine import stop_signals
from drq.envs.timestep import TimeStep

_COMMANDS = ("reset", "step", "render")
_START_TIMEOUT_S = 300.0  # importing dm_control and compiling a model can take a while on a busy machine


def _worker_main(conn: Connection, factory: Callable[[], Any], parent_pid: int | None = None,
                 die_with_parent: bool = False) -> None:  # fmt: skip
    stop_signals.ignore_in_child(parent_pid, die_with_parent)  # the trainer handles them and closes us
    env = None
    try:
        env = factory()  # the env sets up rendering (drq.envs.rendering) before its simulator is imported
        conn.send(("ok", (env.observation_shape, env.action_shape, env.action_low, env.action_high,
                          getattr(env, "backend", None))))
        while True:
            try:
                command, args = conn.recv()
            except (EOFError, OSError):
                return  # parent went away
            if command == "close":
                conn.send(("ok", None))
                return
            try:
                if command not in _COMMANDS:
                    raise ValueError(f"unknown worker command {command!r}; choices: {_COMMANDS}")
                result = getattr(env, command)(*args)
            except Exception as exc:  # noqa: BLE001 - every error goes back to the parent
                conn.send(_error_reply(exc))
            else:
                conn.send(("ok", result))
    except Exception as exc:  # noqa: BLE001 - construction errors go back too
        try:
            conn.send(_error_reply(exc))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if env is not None:
            env.close()
        conn.close()


def _error_reply(exc: BaseException) -> tuple[str, Any]:
    details = traceback.format_exc()
    try:
        payload: Any = pickle.dumps(exc)
        pickle.loads(payload)
    except Exception:  # noqa: BLE001 - an exception that does not pickle becomes a RuntimeError with its text
        payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return ("error", (payload, details))


def _shutdown(process: mp.process.BaseProcess, conn: Connection) -> None:
    """Ask the worker to exit; terminate it if it does not, and always reap it (no zombies)."""
    try:
        if process.is_alive():
            conn.send(("close", ()))
            if conn.poll(5.0):
                conn.recv()
    except (BrokenPipeError, EOFError, OSError):
        pass
    finally:
        conn.close()
        process.join(5.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join()


def _standard_default_start_method() -> None:
    """A spawned child re-applies its parent's *default* start method before anything else. Inside a joblib/loky
    worker (hydra's joblib launcher: ``hydra/launcher=local``) that default is 'loky', which the child cannot resolve
    ("cannot find context for 'loky'"), so the worker would die at birth. Reset the default to 'spawn' there."""
    method = mp.get_start_method(allow_none=True)
    if method not in (None, "fork", "spawn", "forkserver"):
        mp.set_start_method("spawn", force=True)


class AsyncEnv:
    """``factory()`` running in a worker process; same methods, same TimeSteps. Without a factory, the DMC env
    ``drq.envs.pixels.make_env(**make_env_kwargs)``."""

    def __init__(self, factory: Callable[[], Any] | None = None, **make_env_kwargs: Any) -> None:
        if factory is None:
            from drq.envs.pixels import PixelEnv  # no dm_control import here: the module imports it on construction

            factory = functools.partial(PixelEnv, **make_env_kwargs)
        elif make_env_kwargs:
            raise TypeError(f"AsyncEnv takes a factory or make_env keyword arguments, not both: {sorted(make_env_kwargs)}")
        _standard_default_start_method()
        self._start(factory)
        try:
            (self.observation_shape, self.action_shape, self.action_low, self.action_high,
             self.backend) = self._receive(_START_TIMEOUT_S)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _start(self, factory: Callable[[], Any]) -> None:
        context = mp.get_context("spawn")
        self._conn, worker_conn = context.Pipe()
        main_thread = threading.current_thread() is threading.main_thread()
        self._process = context.Process(target=_worker_main, daemon=True, name="drq-env-worker",
                                        args=(worker_conn, factory, os.getpid(), main_thread))  # fmt: skip
        # A group signal during the worker's start-up must not kill it: the worker inherits the blocked mask and
        # ignores the signals before unblocking them. multiprocessing's resource tracker is started first: starting it
        # inside the block would unblock SIGINT and SIGTERM in this thread (CPython's resource_tracker.ensure_running
        # unblocks them after spawning the tracker, whatever the mask was before), and the worker would then start
        # with them deliverable, dying of a SIGTERM that lands before it ignores it.
        resource_tracker.ensure_running()
        with stop_signals.blocked():
            self._process.start()
        worker_conn.close()
        self._finalizer = weakref.finalize(self, _shutdown, self._process, self._conn)
        self._pending = False

    def _receive(self, timeout_s: float | None = None) -> Any:
        if timeout_s is not None and not self._conn.poll(timeout_s):
            raise TimeoutError(f"environment worker did not answer within {timeout_s:.0f} s")
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._process.join(1.0)
            raise RuntimeError(
                f"environment worker died (exit code {self._process.exitcode}); see its traceback above. If it "
                "says 'bootstrapping phase', guard the script's entry point with `if __name__ == \"__main__\":`"
            ) from None
        if status == "error":
            exc_bytes, details = payload
            exc = pickle.loads(exc_bytes)
            exc.add_note(f"raised in the environment worker process:\n{details}")
            raise exc
        return payload

    def _call(self, command: str, *args: Any) -> Any:
        if not self._finalizer.alive:
            raise RuntimeError("AsyncEnv is closed")
        if self._pending:
            raise RuntimeError(f"{command}() called while a step_async() is waiting for step_wait()")
        self._conn.send((command, args))
        return self._receive()

    def reset(self, seed: int | None = None) -> TimeStep:
        """The env's ``reset`` in the worker (``seed``: re-seed the task's initial-state RNG first)."""
        return self._call("reset", seed)

    def step_async(self, action: np.ndarray) -> None:
        """Send ``action`` (float32 (A,)); the worker steps and renders while the caller does other work."""
        if not self._finalizer.alive:
            raise RuntimeError("AsyncEnv is closed")
        if self._pending:
            raise RuntimeError("step_async() called twice without step_wait()")
        self._conn.send(("step", (np.asarray(action),)))
        self._pending = True

    def step_wait(self) -> TimeStep:
        """The TimeStep of the action sent by :meth:`step_async` (blocks until the worker is done)."""
        if not self._pending:
            raise RuntimeError("step_wait() called without step_async()")
        self._pending = False
        return self._receive()

    def step(self, action: np.ndarray) -> TimeStep:
        self.step_async(action)
        return self.step_wait()

    def render(self, size: int = 256) -> np.ndarray:
        """uint8 (size, size, 3) from the env's camera, rendered in the worker."""
        return self._call("render", size)

    def close(self) -> None:
        """Stop and reap the worker (also runs at garbage collection and interpreter exit)."""
        self._finalizer()

    def __enter__(self) -> "AsyncEnv":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
