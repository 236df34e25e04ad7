"""Tables, colours and JSON.  Decides nothing: the commands pass results in.

Colour only on a TTY and never with ``NO_COLOR``; JSON documents always
carry ``"schema": 1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import IO, Any

from orch.streams import result

SCHEMA = 1

_COLOURS = {
    "up_to_date": "green",
    "done": "green",
    "ok": "green",
    "unchanged": "green",
    "behind": "yellow",
    "running": "cyan",
    "skipped": "yellow",
    "locked": "magenta",
    "refused": "red",
    "failed": "red",
    "dirty": "red",
    "unknown_revision": "red",
    "unreachable": "red",
    "unconfigured": "yellow",
}
_CODES = {"red": 31, "green": 32, "yellow": 33, "magenta": 35, "cyan": 36}


def use_colour(stream: IO[str]) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour(word: str, stream: IO[str] | None = None) -> str:
    stream = stream or result()
    name = _COLOURS.get(word)
    if name is None or not use_colour(stream):
        return word
    return f"\x1b[{_CODES[name]}m{word}\x1b[0m"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], stream: IO[str] | None = None
) -> str:
    """An aligned plain-text table; cells coloured by value on a TTY."""
    stream = stream or result()
    text_rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in text_rows:
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - len(cell))
            cells.append(colour(cell, stream) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def dumps(doc: dict[str, Any]) -> str:
    out = {"schema": SCHEMA}
    out.update(doc)
    return json.dumps(out, indent=2, default=str)


def short(revs: Sequence[str] | None, empty: str = "base") -> str:
    if revs is None:
        return "?"
    return ",".join(revs) if revs else empty
