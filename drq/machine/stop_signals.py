"""Stop signals: the trainer alone turns SIGTERM / SIGINT (and SIGUSR1 / SIGUSR2 / SIGHUP where configured) into a
request to stop at its next safe point; its child processes never see them.

Schedulers signal a whole process group: SLURM preemption and ``scancel``, ``timeout``, ``docker stop``, Kubernetes,
and Ctrl-C in a terminal all reach the trainer *and* its environment workers and ffmpeg. So:

- :class:`StopSignals` (held by :class:`drq.run.trainer.Trainer` from its first line to its ``close``) records the first
  configured signal and returns; the loop polls :attr:`StopSignals.requested` at its safe points (between agent steps,
  between evaluation steps), writes a snapshot and stops. A second SIGINT stops at once (``KeyboardInterrupt``);
  repeats of the other signals are ignored (SLURM sends SIGTERM, then SIGKILL after ``KillWait``).
- Children are started inside :func:`blocked`: the configured-or-not stop signals (:data:`CHILD_IGNORED`) are blocked
  while the child is created, so a signal arriving during a child's start-up stays pending there, and the child then
  ignores them (:func:`ignore_in_child`; env workers) or keeps them blocked (ffmpeg, wandb's service), which has the
  same effect. The parent's own pending signal is delivered when :func:`blocked` returns.
- The process exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the shell's convention. If another
  Python handler was installed before the trainer's (submitit's SIGUSR2 requeue handler on SLURM), it is called after
  the snapshot is written (:meth:`StopSignals.chain`), so the scheduler's own requeue still happens.

Signal names in the config: ``stop_signals: [SIGINT, SIGTERM, SIGUSR1, SIGUSR2]`` (default), any of
:data:`CHOICES`; a signal left out keeps its default action (SIGUSR1's kills the process with no snapshot).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterable, Iterator

CHOICES = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP")
DEFAULT = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
# Signals no child of the trainer acts on: every signal the trainer may be configured to handle.
CHILD_IGNORED = tuple(getattr(signal, name) for name in CHOICES)


def parse(names: Any) -> tuple[signal.Signals, ...]:
    """``['SIGTERM', 'USR1', 15]`` -> signals; raises ``ValueError`` naming the bad entry and the choices."""
    if names is None:
        names = DEFAULT
    if isinstance(names, str):
        names = [n.strip("'\"") for n in names.replace(",", " ").split() if n.strip("'\"")]
    out: list[signal.Signals] = []
    for name in names:
        try:
            sig = signal.Signals(int(name)) if str(name).isdigit() else signal.Signals[_full(str(name))]
        except (KeyError, ValueError):
            sig = None
        if sig is None or sig.name not in CHOICES:
            raise ValueError(f"stop_signals: {name!r} is not one of {', '.join(CHOICES)}")
        if sig not in out:
            out.append(sig)
    return tuple(out)


def _full(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("SIG") else f"SIG{name}"


def exit_code(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum``: 128 + number (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


class StopSignals:
    """Records the first of ``signals`` that arrives; :meth:`install` / :meth:`restore` the handlers (main thread
    only: elsewhere ``install`` does nothing and :attr:`installed` stays False)."""

    def __init__(self, signals: Iterable[int] = (), interactive_signal: int = signal.SIGINT) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.requested: int | None = None
        self.installed = False
        self._previous: dict[int, Any] = {}
        self._interactive = interactive_signal

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested is None:
            self.requested = signum
        elif signum == self._interactive and signum == self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        self.installed = True
        return self

    def restore(self) -> None:
        """Put the handlers found at :meth:`install` back (idempotent)."""
        if not self.installed:
            return
        for sig, previous in self._previous.items():
            try:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self.installed = False

    def reconfigure(self, signals: Iterable[int]) -> "StopSignals":
        """Handle ``signals`` from now on instead (handlers swapped with the signals blocked, so none is lost); a
        signal already received stays requested if it is one of them. Used by ``train.py``, which installs the
        default set first thing, before the config (with ``stop_signals``) is known."""
        new = tuple(signal.Signals(s) for s in signals)
        with blocked(set(self.signals) | set(new)):
            self.restore()
            if self.requested is not None and self.requested not in new:
                self.requested = None
            self.signals = new
            self._previous = {}
            self.install()
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested is not None else "stop"

    def chain(self) -> None:
        """Call the Python handler that was installed before ours for the requested signal, if there was one
        (e.g. submitit's requeue on SIGUSR2); the defaults (SIG_DFL, SIG_IGN, Python's KeyboardInterrupt) are not
        called: the caller exits with :func:`exit_code` instead."""
        previous = self._previous.get(self.requested)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.requested, None)


@contextlib.contextmanager
def blocked(signals: Iterable[int] = CHILD_IGNORED) -> Iterator[None]:
    """Block ``signals`` in this thread while the body runs (start child processes here: they inherit the mask)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_in_child(parent_pid: int | None = None, die_with_parent: bool = True) -> None:
    """First thing in a worker started inside :func:`blocked`: ignore :data:`CHILD_IGNORED`, then unblock them (a
    signal that arrived during start-up is dropped); on Linux, ask the kernel for SIGKILL when the parent dies
    (``PR_SET_PDEATHSIG``), and exit at once if it already has."""
    for sig in CHILD_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(CHILD_IGNORED))
    if die_with_parent and _set_parent_death_signal(signal.SIGKILL):
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(1)  # the parent died before the request took effect


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
