"""What the ``orch`` process does around a command, and only the process.

Three tweaks that would be wrong inside a library (a program that uses
:mod:`orch.service` keeps its own imports, its own garbage collector and
its own exit), so they are applied by :func:`run` alone, the console
script's entry:

- :class:`MakoWithoutPygments`: Alembic's Mako loads without Pygments;
- no cyclic garbage collection while the process starts (see
  :func:`startup_over`);
- the fast exit: ``os._exit`` after flushing and the ``atexit`` handlers.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any


def run(main: Callable[[], None]) -> None:
    """Call *main* (which exits with ``sys.exit``), then end the process fast.

    A process that has imported SQLAlchemy, Alembic and a driver spends
    0.15-0.2 s of CPU at exit tearing its modules down, object by object: as
    much as a whole ``orch status`` of a few databases.  Nothing orch needs
    happens in that teardown.  So once *main* is done, this flushes stdout
    and stderr, runs the ``atexit`` handlers (logging's flush, ...) and ends
    the process with ``os._exit``.  If another non-daemon thread is still
    alive (never the case for the CLI's own commands), it exits the ordinary
    way, which waits for that thread.
    """
    import gc
    import threading

    global _GC_HELD
    if gc.isenabled():  # see startup_over
        gc.disable()
        _GC_HELD = True
        os.register_at_fork(before=_before_fork)
    sys.meta_path.insert(0, MakoWithoutPygments())
    try:
        main()
        code = 0
    except SystemExit as exc:  # main() always exits with an int
        code = exc.code if isinstance(exc.code, int) else 1
    if threading.active_count() > 1:
        sys.exit(code)
    import atexit

    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (``orch status | head``) takes nothing more: not an error;
        # a descriptor closed from the start (``orch status >&-``) is no stream at all
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()

    atexit._run_exitfuncs()  # the one public way to run them early does not exist
    os._exit(code)


#: whether :func:`run` turned the garbage collector off for the process's start
_GC_HELD = False


def startup_over() -> None:
    """The process has started: collect cyclic garbage again, never in what start-up made.

    Importing SQLAlchemy, psycopg and Alembic allocates a few hundred
    thousand long-lived objects, and the cyclic garbage collector walks
    them again and again while they are made: about 27 ms of a 240 ms
    start, none of which frees anything.  :func:`run` turns it off until a
    command's start is over; this freezes what exists (``gc.freeze``: it is
    never walked again, and forked workers do not copy its pages by
    touching it) and turns collection back on for the run itself, whose
    SQLAlchemy and Alembic objects do make cycles.  Commands that migrate
    call it before the run (and every fork does, see :func:`_before_fork`);
    a read-only command may end with collection still off (it is short and
    bounded).  A no-op in a process :func:`run` did not start.
    """
    import gc

    global _GC_HELD
    if _GC_HELD:
        _GC_HELD = False
        gc.freeze()
        gc.enable()


def _before_fork() -> None:
    """A worker must not start with collection off (:func:`startup_over`)."""
    startup_over()


class MakoWithoutPygments:
    """An import hook that lets Mako load without Pygments (the console script only).

    Alembic imports Mako to render revision templates; Mako's ``exceptions``
    module, imported with it, loads Pygments when it is installed (pytest,
    IPython and rich all bring it) to colour HTML error pages, which neither
    Alembic nor orch ever renders: 0.1-0.15 s of CPU per process, as much as
    the rest of Alembic's imports.  This finder makes that one optional
    import fail, so Mako installs its plain fallback, and then removes
    itself: anything imported later, including Pygments itself, imports as
    usual.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "mako.ext.pygmentplugin":
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            raise ImportError("orch: HTML highlighting of Mako errors is not needed")
        return None
