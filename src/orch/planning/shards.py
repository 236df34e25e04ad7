"""``--shard I/N``: a stable split of the selected databases among N runners.

A database belongs to shard ``crc32(name) mod N + 1``: the same in every
process and on every machine (no ``PYTHONHASHSEED``), so N runners started
with ``--shard 1/N`` ... ``--shard N/N`` (a Kubernetes Indexed Job) never
overlap and together cover the selection.  A runner without ``--shard`` is
safe beside them too: each database is migrated under its own lock.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

from orch.errors import UsageError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N; a UsageError says the form otherwise."""
    m = _SHARD.match(text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise UsageError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(m[1]), int(m[2])


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) database *name* belongs to."""
    return zlib.crc32(name.encode()) % count + 1


def in_shard(names: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    """The names of *names* in *shard* (all of them for None), order kept."""
    if shard is None:
        return list(names)
    index, count = shard
    return [n for n in names if shard_of(n, count) == index]
