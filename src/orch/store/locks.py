"""One migration lock per database, held for a whole run on that database.

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

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orch.config.registry import DatabaseSpec, Registry, sqlite_path
from orch.errors import DatabaseError
from orch.store.db import backend, lock_path

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class LockTimeout(Exception):
    """The lock was not obtained within the timeout."""


class LockCancelled(Exception):
    """The wait for the lock was given up because the run is stopping (SIGINT/SIGTERM)."""


def lock_name(db: DatabaseSpec, url: str) -> str:
    """A stable name for the lock of *db*'s version table (<= 64 chars for MySQL).

    MySQL's ``GET_LOCK`` names are server-wide, so the name includes the
    schema that holds the version table (``version_table_schema``, else the
    URL's database), lower-cased because the names are case-insensitive.
    """
    schema = db.version_table_schema
    if schema is None and backend(url) == "mysql":
        from sqlalchemy.engine import make_url

        schema = make_url(url).database
    ident = f"{(schema or '').lower()}.{db.version_table.lower()}"
    return "orch:" + hashlib.sha1(ident.encode()).hexdigest()[:40]


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
    """A signed 64-bit advisory key; advisory locks are per server database already."""
    ident = f"{db.version_table_schema or ''}.{db.version_table}"
    digest = hashlib.blake2b(f"orch:{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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
        self.kind = backend(url)
        self._fd: int | None = None
        self.held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if self.kind == "postgresql":
            self._poll(deadline, self._pg_try)
        elif self.kind == "mysql":
            self._poll(deadline, self._mysql_try)
        elif self.kind == "sqlite":
            self._sqlite(deadline)
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self.kind == "postgresql":
                from sqlalchemy import text

                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": pg_key(self.db)})
                self.conn.commit()
            elif self.kind == "mysql":
                from sqlalchemy import text

                name = lock_name(self.db, self.url)
                self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
                self.conn.commit()
        except Exception:
            # the connection is closed right after; the server drops the lock with it
            pass
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> MigrationLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- backends

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

    def _pg_try(self) -> bool:
        from sqlalchemy import text

        got = self.conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": pg_key(self.db)}
        ).scalar()
        self.conn.commit()  # session lock survives; no transaction left open (autobegin trap)
        return bool(got)

    def _mysql_try(self) -> bool:
        from sqlalchemy import text

        got = self.conn.execute(
            text("SELECT GET_LOCK(:n, 0)"), {"n": lock_name(self.db, self.url)}
        ).scalar()
        self.conn.commit()
        if got is None:
            raise RuntimeError(f"{self.db.name}: GET_LOCK failed on the server")
        return bool(got == 1)

    def _sqlite(self, deadline: float) -> None:
        path = sqlite_path(self.url)
        if path is None:  # in-memory: private to this process
            return
        lp = lock_path(path)
        try:
            lp.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the migration lock file {lp}: {exc.strerror}; its directory "
                "must be writable by this user"
            ) from exc
        fd = self._fd

        def attempt() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        try:
            self._poll(deadline, attempt)
        except BaseException:
            os.close(fd)
            self._fd = None
            raise


def is_locked(conn: Connection | None, db: DatabaseSpec, url: str) -> bool:
    """Whether another session holds *db*'s migration lock now (read-only probe).

    *conn* may be None for SQLite (the lock is a file beside the database;
    no SQLAlchemy import on that path, which keeps a SQLite status light).
    """
    kind = backend(url)
    if kind == "sqlite":
        path = sqlite_path(url)
        if path is None:
            return False
        lp = lock_path(path)
        if not lp.exists():
            return False
        return sqlite_file_locked(lp)
    if conn is None:
        raise ValueError("is_locked needs a connection for server databases")
    from sqlalchemy import text

    if kind == "postgresql":
        key = pg_key(db)
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
        ).scalar()
        return bool(row)
    if kind == "mysql":
        holder = conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": lock_name(db, url)})
        return holder.scalar() is not None
    return False


def sqlite_file_locked(lp: Path) -> bool:
    fd = os.open(lp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
