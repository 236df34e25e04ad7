"""stdout is the command's result: whatever else writes to stdout lands on stderr.

Revisions of real projects call ``print()``; env.py and the modules it
imports may too, and a revision can write to file descriptor 1 itself
(``os.write(1, ...)``, a subprocess that inherits it).  Any of that on
stdout corrupts the result: ``orch upgrade --all --json | jq`` fails, the SQL
of ``--sql`` gets a stray line.  So while a command runs (see the CLI's
``OrchCommand``), :func:`result_to_private_stdout`:

- keeps a private duplicate of the real stdout, where :func:`result` (the
  CLI's ``out`` and ``emit_json``) writes the table or the JSON document;
- points file descriptor 1 at stderr, so a ``print()``, an ``os.write(1,
  ...)`` or an inherited descriptor reaches stderr, in this process and in
  every worker it forks or spawns (workers inherit descriptor 1);
- sets ``sys.stdout`` to ``sys.stderr``, for Python-level writes.

When ``sys.stdout`` is not file descriptor 1 (an embedding program or a test
runner replaced it), only ``sys.stdout`` is swapped: descriptor 1 is then not
where the result goes, and is left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

_RESULT: TextIO | None = None


def result() -> TextIO:
    """The stream for orch's own result: the real stdout, also while it is redirected."""
    return _RESULT if _RESULT is not None else sys.stdout


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation, closed
        return None


@contextlib.contextmanager
def result_to_private_stdout() -> Iterator[None]:
    """Run the block with stdout (descriptor 1 and ``sys.stdout``) pointing at stderr.

    Only :func:`result` still reaches the real stdout.  Nested use is a no-op.
    """
    global _RESULT
    if _RESULT is not None or sys.stdout is None:  # nested; or no stdout at all (fd 1 closed)
        yield
        return
    original = sys.stdout
    saved: int | None = None
    stream: TextIO = original
    if _fd_of(original) == 1 and _fd_of(sys.stderr) is not None:
        with contextlib.suppress(OSError, ValueError):
            original.flush()
        try:
            saved = os.dup(1)
            os.dup2(sys.stderr.fileno(), 1)
        except OSError:  # stdout or stderr closed: nothing to protect, or nowhere to send it
            if saved is not None:
                os.close(saved)
            saved = None
        if saved is not None:
            stream = open(  # noqa: SIM115  closed in the finally below
                saved,
                "w",
                encoding=getattr(original, "encoding", None) or "utf-8",
                errors=getattr(original, "errors", None) or "strict",
                buffering=1 if getattr(original, "line_buffering", False) else -1,
                closefd=False,
            )
    _RESULT = stream
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        _RESULT = None
        sys.stdout = original
        with contextlib.suppress(OSError, ValueError):  # what was printed, before orch's last word
            sys.stderr.flush()
        if saved is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed pipe takes nothing more
                stream.flush()
            with contextlib.suppress(OSError, ValueError):
                stream.close()  # closefd=False: the descriptor stays for the dup2 below
            with contextlib.suppress(OSError, ValueError):  # sys.__stdout__ writes meanwhile
                original.flush()
            os.dup2(saved, 1)
            os.close(saved)
