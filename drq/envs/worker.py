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

A worker that is lost raises :class:`WorkerLost` from the call that meets it, one sentence naming the worker, its exit
code or signal and the last line it wrote to stderr: it died (killed by a signal, exited, or closed its pipe: the
``send`` or ``recv`` fails), or it did not answer within ``timeout_s`` (then it is killed first; the start and the
first command after it have ``start_timeout_s``, while the simulator imports and the renderer starts). The worker's
stderr reaches the parent through a pipe that a thread copies to the parent's stderr as it arrives, keeping the last
few kB; the hot path only gains a ``poll(timeout)`` before each ``recv``. :class:`drq.envs.restarting.RestartingEnv`
replaces a lost worker with a new one.

As with any ``spawn`` worker, a script that creates an ``AsyncEnv`` at import time must guard its entry point with
``if __name__ == "__main__":`` (the worker re-imports the main module).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import signal
import threading
import traceback
import weakref
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any, Callable, NoReturn

import numpy as np

from drq.machine import stop_signals
from drq.envs.timestep import TimeStep

__all__ = ["AsyncEnv", "WorkerLost", "START_TIMEOUT_S"]

_COMMANDS = ("reset", "step", "render")
START_TIMEOUT_S = 300.0  # importing dm_control and compiling a model can take a while on a busy machine
_STDERR_TAIL_BYTES = 4096  # what is kept of a worker's stderr for the line that reports its death
_LAST_LINE_CHARS = 300


class WorkerLost(RuntimeError):
    """The worker process is gone: it died (killed by a signal or exited), closed its pipe, or did not answer in
    time and was killed. The message is one sentence saying which and the last line it wrote to stderr.
    ``exitcode``: the process's (negative: killed by that signal; None if unknown); ``hung``: it did not answer."""

    def __init__(self, message: str, exitcode: int | None = None, hung: bool = False) -> None:
        super().__init__(message)
        self.exitcode, self.hung = exitcode, hung


def _worker_main(conn: Connection, factory: Callable[[], Any], parent_pid: int | None = None,
                 die_with_parent: bool = False, stderr: Connection | None = None) -> None:  # fmt: skip
    stop_signals.ignore_in_child(parent_pid, die_with_parent)  # the trainer handles them and closes us
    if stderr is not None:  # everything this process writes to stderr goes to the parent's copying thread
        os.dup2(stderr.fileno(), 2)
        stderr.close()
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


class _StderrTail:
    """Copies what the worker writes to its stderr (the read end of a pipe) to this process's stderr as it arrives,
    in a thread, and keeps the last :data:`_STDERR_TAIL_BYTES` for :meth:`last_line`. The thread ends when every
    write end is closed (the worker exited)."""

    def __init__(self, reader: Connection) -> None:
        self._reader, self._tail = reader, b""
        self._thread = threading.Thread(target=self._copy, name="drq-env-worker-stderr", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        fd = self._reader.fileno()
        try:
            while data := os.read(fd, 65536):
                self._tail = (self._tail + data)[-_STDERR_TAIL_BYTES:]
                try:
                    while data:
                        data = data[os.write(2, data):]
                except OSError:  # our stderr is gone: keep only the tail
                    pass
        except OSError:
            pass
        finally:
            self._reader.close()

    def last_line(self, wait_s: float = 2.0) -> str:
        """The last non-blank line the worker wrote (stripped, at most :data:`_LAST_LINE_CHARS` characters), after
        waiting up to ``wait_s`` seconds for the rest of its output (the worker has exited: the pipe drains)."""
        self._thread.join(wait_s)
        lines = [line.strip() for line in self._tail.decode(errors="replace").splitlines() if line.strip()]
        if not lines:
            return ""
        line = lines[-1]
        return line if len(line) <= _LAST_LINE_CHARS else line[: _LAST_LINE_CHARS - 3] + "..."


def _fate(exitcode: int) -> str:
    """How a process ended, in words: ``'was killed by SIGKILL'``, ``'exited with code 1'``."""
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _standard_default_start_method() -> None:
    """A spawned child re-applies its parent's *default* start method before anything else. Inside a joblib/loky
    worker (hydra's joblib launcher: ``hydra/launcher=local``) that default is 'loky', which the child cannot resolve
    ("cannot find context for 'loky'"), so the worker would die at birth. Reset the default to 'spawn' there."""
    method = mp.get_start_method(allow_none=True)
    if method not in (None, "fork", "spawn", "forkserver"):
        mp.set_start_method("spawn", force=True)


class AsyncEnv:
    """``factory()`` running in a worker process; same methods, same TimeSteps. Without a factory, the DMC env
    ``drq.envs.pixels.make_env(**make_env_kwargs)``.

    ``name``: how a :class:`WorkerLost` names the worker (``'train env'`` -> ``'train env worker (pid 4242) ...'``).
    ``timeout_s``: seconds a reset, step (from ``step_wait``) or render may take before the worker counts as hung
    (None: wait for ever); ``start_timeout_s``: the same for the start (building the env) and the first command
    after it (the first reset renders the first picture)."""

    def __init__(self, factory: Callable[[], Any] | None = None, *, name: str = "environment",
                 timeout_s: float | None = None, start_timeout_s: float | None = START_TIMEOUT_S,
                 **make_env_kwargs: Any) -> None:  # fmt: skip
        if factory is None:
            from drq.envs.pixels import PixelEnv  # no dm_control import here: the module imports it on construction

            factory = functools.partial(PixelEnv, **make_env_kwargs)
        elif make_env_kwargs:
            raise TypeError(f"AsyncEnv takes a factory or make_env keyword arguments, not both: {sorted(make_env_kwargs)}")
        self.name, self._timeout_s, self._start_timeout_s = name, timeout_s, start_timeout_s
        self._replies = 0  # answers received: the start's and the first command's wait start_timeout_s
        _standard_default_start_method()
        self._start(factory)
        try:
            (self.observation_shape, self.action_shape, self.action_low, self.action_high,
             self.backend) = self._receive("start")  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _start(self, factory: Callable[[], Any]) -> None:
        context = mp.get_context("spawn")
        self._conn, worker_conn = context.Pipe()
        stderr_reader, stderr_writer = context.Pipe(duplex=False)
        main_thread = threading.current_thread() is threading.main_thread()
        self._process = context.Process(target=_worker_main, daemon=True, name="drq-env-worker", args=(
            worker_conn, factory, os.getpid(), main_thread, stderr_writer))  # fmt: skip
        # A group signal during the worker's start-up must not kill it: the worker inherits the blocked mask and
        # ignores the signals before unblocking them. multiprocessing's resource tracker is started first: starting it
        # inside the block would unblock SIGINT and SIGTERM in this thread (CPython's resource_tracker.ensure_running
        # unblocks them after spawning the tracker, whatever the mask was before), and the worker would then start
        # with them deliverable, dying of a SIGTERM that lands before it ignores it.
        resource_tracker.ensure_running()
        with stop_signals.blocked():
            self._process.start()
        worker_conn.close()
        stderr_writer.close()
        self._stderr = _StderrTail(stderr_reader)
        self._finalizer = weakref.finalize(self, _shutdown, self._process, self._conn)
        self._pending = False

    def _receive(self, command: str) -> Any:
        """The worker's answer to ``command`` (``'start'`` for the start); :class:`WorkerLost` if none comes."""
        timeout_s = self._start_timeout_s if self._replies < 2 else self._timeout_s
        if timeout_s is not None and not self._conn.poll(timeout_s):
            self._lose(command, timeout_s)
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            self._lose(command)
        self._replies += 1
        if status == "error":
            exc_bytes, details = payload
            exc = pickle.loads(exc_bytes)
            exc.add_note(f"raised in the environment worker process:\n{details}")
            raise exc
        return payload

    def _lose(self, command: str, timeout_s: float | None = None) -> NoReturn:
        """Reap the worker (killed first when it did not answer within ``timeout_s``), close this env and raise
        :class:`WorkerLost` saying which worker, what became of it during ``command`` and its last stderr line."""
        process, pid = self._process, self._process.pid
        if timeout_s is not None:
            process.kill()  # SIGKILL: the worker ignores the stop signals
        process.join(5.0)
        when = "while starting" if command == "start" else f"during {command}"
        if timeout_s is not None:
            what, exitcode = f"did not answer {command} within {timeout_s:g} s and was killed", process.exitcode
        elif process.is_alive():  # its end of the pipe closed, yet it runs on
            process.kill()
            process.join(5.0)
            what, exitcode = f"closed its pipe {when} and was killed", None
        else:
            what, exitcode = f"{_fate(process.exitcode)} {when}", process.exitcode
        message = f"{self.name} worker (pid {pid}) {what}"
        last = self._stderr.last_line()
        if last:
            message += f"; its last stderr line: {last}"
        if command == "start" and timeout_s is None:
            message += (" (if it says 'bootstrapping phase', guard the script's entry point with "
                        "`if __name__ == \"__main__\":`)")
        self.close()
        raise WorkerLost(message, exitcode, hung=timeout_s is not None)

    def _call(self, command: str, *args: Any) -> Any:
        if not self._finalizer.alive:
            raise RuntimeError("AsyncEnv is closed")
        if self._pending:
            raise RuntimeError(f"{command}() called while a step_async() is waiting for step_wait()")
        self._send(command, args)
        return self._receive(command)

    def _send(self, command: str, args: tuple[Any, ...]) -> None:
        try:
            self._conn.send((command, args))
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            self._lose(command)

    def reset(self, seed: int | None = None) -> TimeStep:
        """The env's ``reset`` in the worker (``seed``: re-seed the task's initial-state RNG first)."""
        return self._call("reset", seed)

    def step_async(self, action: np.ndarray) -> None:
        """Send ``action`` (float32 (A,)); the worker steps and renders while the caller does other work."""
        if not self._finalizer.alive:
            raise RuntimeError("AsyncEnv is closed")
        if self._pending:
            raise RuntimeError("step_async() called twice without step_wait()")
        self._send("step", (np.asarray(action),))
        self._pending = True

    def step_wait(self) -> TimeStep:
        """The TimeStep of the action sent by :meth:`step_async` (blocks until the worker is done)."""
        if not self._pending:
            raise RuntimeError("step_wait() called without step_async()")
        self._pending = False
        return self._receive("step")

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
