"""A migration lock belongs to one database, not to the whole server.

MySQL/MariaDB ``GET_LOCK`` names are server-wide: a name without the database
in it made ``core`` and ``analytics`` on one server share a lock (``--jobs``
serialised them, ``status`` showed every database on the server ``running``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orch.config.registry import DatabaseSpec
from orch.store.db import connect
from orch.store.locks import MigrationLock, is_locked


def test_lock_of_one_database_leaves_another_on_the_same_server_free(
    backend: str, make_db: Callable[..., str]
) -> None:
    spec = DatabaseSpec("core", Path("/nowhere/core"), "core")
    url_a, url_b = make_db(backend), make_db(backend)
    holder = connect(url_a, 5)
    other = connect(url_b, 5)
    probe_a = connect(url_a, 5)
    try:
        with MigrationLock(holder, spec, url_a, timeout=1):
            assert is_locked(probe_a, spec, url_a)
            assert not is_locked(other, spec, url_b)
            with MigrationLock(other, spec, url_b, timeout=1) as second:
                assert second.held
        assert not is_locked(probe_a, spec, url_a)
    finally:
        for c in (holder, other, probe_a):
            c.close()
