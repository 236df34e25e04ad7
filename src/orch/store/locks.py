"""One migration lock per database, held for a whole run on that database.

What one attempt at the lock is belongs to the backend
(:meth:`orch.backends.Backend.lock`); this module owns the waiting:

- PostgreSQL: a *session* advisory lock (a transaction-scoped one would be
  released by ``autocommit_block()``), taken on the migration connection.
- MySQL/MariaDB: ``GET_LOCK`` on the migration connection itself (a separate
  idle connection killed by ``wait_timeout`` would release it silently).
- SQLite: ``flock`` on a file beside the database, never the database file
  (closing any descriptor on it would drop SQLite's own locks).

Every lock dies with its connection or process, so a killed orch leaves no
stale lock.  The key covers the database's version table, so two orch
databases sharing one server database (different version tables) do not
block each other.  MySQL lock names are server-wide (and case-insensitive),
so theirs also carry the schema the version table lives in: two databases
on one server never share a lock.

Every backend is *polled* with a non-blocking attempt (pg_try_advisory_lock,
``GET_LOCK(name, 0)``, ``LOCK_NB``): a waiting orch stays interruptible and
reports once that it waits, and the timeout is exact to ~0.25 s.

Lock order (the dependency rule under concurrency).  A run on a database
takes that database's lock first.  A downgrade then also takes the locks of
the database's dependents, in :func:`lock_order` (dependencies before
dependents, then by name), checks that they are at base and holds them until
its downgrade ends.  An upgrade takes no lock but its own: it reads its
dependencies under it, which is enough because a downgrade of a dependency
needs that very lock.  Every process that holds several locks took them in
one total order (a database's dependents all come after it), so no two runs
ever wait for each other in a cycle; a wait still ends at ``--lock-timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orch.backends import for_url
from orch.backends.base import LockPrimitive
from orch.backends.postgresql import advisory_key
from orch.config.registry import DatabaseSpec, Registry

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class LockTimeout(Exception):
    """The lock was not obtained within the timeout."""


class LockCancelled(Exception):
    """The wait for the lock was given up because the run is stopping (SIGINT/SIGTERM)."""


def lock_name(db: DatabaseSpec, url: str) -> str:
    """A stable name for the lock of *db*'s version table (<= 64 chars for MySQL).

    MySQL's ``GET_LOCK`` names are server-wide, so there the name includes
    the schema that holds the version table (``version_table_schema``, else
    the URL's database), lower-cased because the names are case-insensitive.
    """
    return for_url(url).lock_name(db.version_table_schema, db.version_table)


def lock_order(registry: Registry, names: Iterable[str]) -> list[str]:
    """*names* in the one order every run takes several locks in (see the module doc).

    By depth in the dependency graph (a database with no dependency is 0, any
    other one more than its deepest dependency), then by name: a dependent
    always comes after each of its dependencies, and the order is total.
    """
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            deps = registry.databases[name].depends_on
            depth[name] = 1 + max(map(depth_of, deps)) if deps else 0
        return depth[name]

    return sorted(set(names), key=lambda n: (depth_of(n), n))


def pg_key(db: DatabaseSpec) -> int:
    """*db*'s PostgreSQL advisory key (see :func:`orch.backends.postgresql.advisory_key`)."""
    return advisory_key(db.version_table_schema, db.version_table)


class MigrationLock:
    """The lock of one database; use as a context manager around the whole run."""

    def __init__(
        self,
        conn: Connection,
        db: DatabaseSpec,
        url: str,
        timeout: float,
        on_wait: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.conn = conn
        self.db = db
        self.url = url
        self.timeout = timeout
        self.on_wait = on_wait
        self.cancelled = cancelled  # polled while waiting: a stopping run waits no longer
        self.backend = for_url(url)
        self._primitive: LockPrimitive | None = None
        self.held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        primitive = self.backend.lock(
            self.conn, self.db.version_table_schema, self.db.version_table, who=self.db.name
        )
        try:
            self._poll(deadline, primitive.attempt)
        except BaseException:
            primitive.close()
            raise
        self._primitive = primitive
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        primitive, self._primitive = self._primitive, None
        if primitive is None:
            return
        try:
            primitive.release()
        except Exception:
            # the connection is closed right after; the server drops the lock with it
            pass
        finally:
            primitive.close()

    def __enter__(self) -> MigrationLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- waiting

    def _poll(self, deadline: float, attempt: Callable[[], bool]) -> None:
        delay = 0.02
        told = False
        while True:
            if attempt():
                return
            if self.cancelled is not None and self.cancelled():
                raise LockCancelled(f"{self.db.name}: gave up waiting for the migration lock")
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"migration lock not obtained within {self.timeout:g}s "
                    "(another orch is migrating it)"
                )
            if not told and self.on_wait is not None:
                self.on_wait(f"{self.db.name}: waiting for the migration lock held by another run")
                told = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)


def is_locked(conn: Connection | None, db: DatabaseSpec, url: str) -> bool:
    """Whether another session holds *db*'s migration lock now (read-only probe).

    *conn* may be None for SQLite (the lock is a file beside the database;
    no SQLAlchemy import on that path, which keeps a SQLite status light).
    """
    return for_url(url).lock_held(conn, db.version_table_schema, db.version_table)
