"""Graceful stop: SIGINT/SIGTERM finish the revision in flight, start nothing new.

A migration killed half-way is the worst outcome on MySQL/MariaDB (a dirty
database) and a wasted, rolled-back transaction elsewhere.  So the first
SIGINT or SIGTERM only *asks* orch to stop:

- every database that is migrating finishes the revision it is in (its
  transaction commits as usual) and then stops at that revision;
- nothing new starts: databases not yet started are ``skipped``;
- locks are released, the summary is printed, and orch exits 130 (SIGINT)
  or 143 (SIGTERM), the shell's convention for "ended by that signal".

A second signal aborts the revision in flight: it is cancelled and rolled
back (on MySQL/MariaDB it may be half-applied, so the database is left
``dirty`` and says so).  Further signals change nothing more.

The parent process coordinates.  Worker processes ignore SIGINT and SIGTERM
(a terminal's Ctrl-C and systemd's stop reach the whole process group) and
look at a flag shared through the fork (a ``multiprocessing`` Event) before
each revision; on the second signal the parent sends them SIGUSR1, which
raises KeyboardInterrupt only while a revision is running.  Inline runs
(``--jobs 1``) use the same flag and the same rule.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
ABORT_SIGNAL = signal.SIGUSR1

#: the Stop of the command being run (read by run_one in the parent and, via fork, in workers)
CURRENT: Stop | None = None
#: True while a revision runs in this process: only then may a second signal abort
_ABORTABLE = False
#: set while an async driver's event loop runs the migration (see orch.store.aio): aborts there
_LOOP_ABORT: Callable[[], bool] | None = None


class Interrupted(Exception):
    """Raised before a revision when a stop was requested (nothing of it has run)."""


class Stop:
    """The stop request of one command, shared with the worker processes it forks."""

    def __init__(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._event = ctx.Event()
        # the first signal of the whole command, in shared memory: workers name it too
        self._signum = ctx.Value("i", 0, lock=False)
        self.count = 0  # signals in the current phase (run, then rollback)
        self.worker_pids: Callable[[], list[int]] = list

    @property
    def signum(self) -> int | None:
        return int(self._signum.value) or None

    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int | None:
        return EXIT_CODES.get(signal.Signals(self.signum)) if self.signum is not None else None

    def reason(self) -> str:
        return f"interrupted by {self.name}"

    def new_phase(self) -> None:
        """Start a new phase (the rollback after a run): clear the request, keep the signal."""
        self._event.clear()
        self.count = 0

    def request(self, signum: int) -> None:
        self.count += 1
        if self.signum is None:
            self._signum.value = signum
        self._event.set()
        name = signal.Signals(signum).name
        if self.count == 1:
            _tell(
                f"orch: {name}: finishing the revision in flight, starting nothing new "
                "(send it again to abort the revision in flight)"
            )
        elif self.count == 2:
            _tell(f"orch: {name} again: aborting the revision in flight")
            for pid in self.worker_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, ABORT_SIGNAL)
            if _ABORTABLE:
                _abort()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        """Handle SIGINT/SIGTERM for the duration (main thread only; else a no-op)."""
        global CURRENT
        previous_current = CURRENT
        CURRENT = self
        if threading.current_thread() is not threading.main_thread():
            try:
                yield self
            finally:
                CURRENT = previous_current
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request(signum)

        old = {s: signal.signal(s, handler) for s in EXIT_CODES}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            CURRENT = previous_current


def requested() -> bool:
    """Whether the command running in this process (or its parent) was asked to stop."""
    return CURRENT is not None and CURRENT.requested()


def reason() -> str:
    return CURRENT.reason() if CURRENT is not None else "interrupted"


@contextlib.contextmanager
def abortable() -> Iterator[None]:
    """Mark a revision as running: a second signal may abort it (KeyboardInterrupt).

    Under an async driver the abort arrives as the event loop's cancellation
    of the statement in flight (see :func:`set_loop_abort`); it leaves here as
    the same KeyboardInterrupt.
    """
    global _ABORTABLE
    _ABORTABLE = True
    try:
        yield
    except BaseException as exc:
        if _LOOP_ABORT is not None:
            import asyncio  # loaded already: a loop is running

            if isinstance(exc, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # delivered: the loop goes on for the cleanup
                raise KeyboardInterrupt from exc
        raise
    finally:
        _ABORTABLE = False


def revision_running() -> bool:
    """Whether a revision runs in this process now (a second signal would abort it)."""
    return _ABORTABLE


def set_loop_abort(abort: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """Install how to abort a revision awaiting an event loop; returns the previous one.

    *abort* is called from the signal handler instead of raising
    KeyboardInterrupt; it returns False when the signal landed outside the
    loop's wait (then KeyboardInterrupt is raised as usual).
    """
    global _LOOP_ABORT
    previous, _LOOP_ABORT = _LOOP_ABORT, abort
    return previous


def _abort() -> None:
    """Abort the revision in flight (called from a signal handler while it runs)."""
    if _LOOP_ABORT is not None and _LOOP_ABORT():
        return
    raise KeyboardInterrupt


def worker_signals() -> None:
    """In a worker: leave SIGINT/SIGTERM to the parent; SIGUSR1 aborts a running revision."""

    def abort(_signum: int, _frame: FrameType | None) -> None:
        if _ABORTABLE:
            _abort()

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(ABORT_SIGNAL, abort)


def _tell(message: str) -> None:
    """Write to stderr from a signal handler (no buffered-IO reentrancy)."""
    with contextlib.suppress(OSError):
        os.write(2, (message + "\n").encode())
