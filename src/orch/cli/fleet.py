"""Output for many databases at once (a fleet's tenants): counts, then what needs attention.

A table of 1,000 rows hides the three that failed.  Above :data:`FLEET_ROWS`
databases, ``upgrade``/``downgrade`` and ``status`` print one line of counts
per outcome or state, then only the rows that need attention (``--json``
keeps every row).  While a run goes, a terminal gets one live progress line
on stderr (done/total, failures, elapsed, an estimate); stderr that is not a
terminal (a log, CI) gets none, and stdout never does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import IO

#: Above this many databases, output is counts and the rows that need attention
FLEET_ROWS = 50


def is_fleet(n: int) -> bool:
    return n > FLEET_ROWS


def counts(words: Iterable[str], what: str = "databases") -> str:
    """``1000 databases: 990 done, 7 unchanged, 3 failed`` (in order of first appearance)."""
    seen: dict[str, int] = {}
    for w in words:
        seen[w] = seen.get(w, 0) + 1
    total = sum(seen.values())
    return f"{total} {what}: " + ", ".join(f"{n} {w}" for w, n in seen.items())


class Progress:
    """One line on a terminal's stderr, rewritten as each database finishes."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.done = 0
        self.failed = 0
        self.t0 = time.monotonic()
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.on = tty and is_fleet(total)
        self.shown = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        text = f"{self.done}/{self.total} done, {self.failed} failed, {elapsed:.0f}s elapsed"
        if self.done and self.done < self.total:
            left = elapsed / self.done * (self.total - self.done)
            text += f", about {left:.0f}s left"
        return text

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.on:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        """Take the line away (before another line goes to stderr, and at the end)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
