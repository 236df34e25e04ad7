"""Tables, colours and JSON.  Decides nothing: the commands pass results in.

Colour only on a TTY and never with ``NO_COLOR``; JSON documents always
carry ``"schema": 1``.
"""

from __future__ import annotations

import json
import os
import re
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
    "edited": "red",
    "unreachable": "red",
    "unconfigured": "yellow",
    "error": "red",  # lint levels
    "warning": "yellow",
}
_CODES = {"red": 31, "green": 32, "yellow": 33, "magenta": 35, "cyan": 36}


# C0 and C1 control characters but newline and tab, DEL, and the bidirectional
# overrides: what would let text from a hook, a driver or a database move the
# cursor, rewrite the screen or the window title, set the clipboard, or make
# one line read as another
_CONTROLS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
_UNPRINTABLE = re.compile(_CONTROLS)
# ... the same, sparing the colour sequences this module writes itself
_UNPRINTABLE_BUT_COLOUR = re.compile(
    "(" + "|".join(re.escape(f"\x1b[{c}m") for c in (0, *_CODES.values())) + ")|" + _CONTROLS
)


def _escape(m: re.Match[str]) -> str:
    if m.lastindex:  # a colour sequence of ours
        return m.group(0)
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_colour: bool = False) -> str:
    """*text* safe for a terminal: control characters shown escaped (ESC as ``\\x1b``).

    Newlines and tabs stay (CRLF becomes a newline).  Text orch did not write
    (hook output, driver errors, audit rows) must never drive the terminal;
    *keep_colour* spares only the exact colour codes of :func:`colour`.
    """
    text = text.replace("\r\n", "\n")
    return (_UNPRINTABLE_BUT_COLOUR if keep_colour else _UNPRINTABLE).sub(_escape, text)


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
    """An aligned plain-text table; cells coloured by value on a TTY, escaped (see printable)."""
    stream = stream or result()
    text_rows = [["" if c is None else printable(str(c)) for c in row] for row in rows]
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
