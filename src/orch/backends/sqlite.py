"""SQLite: a file, a file lock beside it, and DDL made transactional.

- Engines get the pysqlite recipe that makes DDL transactional
  (``isolation_level=None`` + explicit ``BEGIN``), so a failed revision rolls
  back on SQLite as it does on PostgreSQL, and Alembic is told so.
- The migration lock is ``flock`` on a file beside the database, never the
  database file (closing any descriptor on it would drop SQLite's own locks).
- ``status`` reads the version table with the stdlib driver alone
  (:func:`read_sqlite_versions`): importing SQLAlchemy would cost more than
  the read.
- An in-memory database is refused: each connection orch opens would get a
  new, empty one.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from orch.backends.base import Backend, ClientParams, LockPrimitive, NoDatabase, describe_error
from orch.errors import DatabaseError

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for in-memory / non-SQLite URLs."""
    m = re.match(r"^sqlite(?:\+\w+)?:///([^?]*)", url)
    if not m or m.group(1) in ("", ":memory:"):
        return None
    return Path(m.group(1))


def absolutize(url: str, root: Path) -> str:
    """A relative SQLite path made relative to *root* (the registry's directory)."""
    m = re.match(r"^(sqlite(?:\+\w+)?):///(.*)$", url)
    if not m:
        return url
    rest = m.group(2)
    path_part, sep, query = rest.partition("?")
    if path_part in ("", ":memory:") or path_part.startswith("/") or path_part.startswith("file:"):
        return url
    return f"{m.group(1)}:///{(root / path_part).resolve()}{sep}{query}"


def lock_path(db_file: Path) -> Path:
    """The file orch locks beside a SQLite database (never the database itself)."""
    return db_file.with_name(db_file.name + ".orch-lock")


def sqlite_file_locked(lp: Path) -> bool:
    """Whether some process holds the lock file *lp* (a shared attempt that never blocks)."""
    fd = os.open(lp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def read_sqlite_versions(path: Path, version_table: str, timeout: float = 5.0) -> tuple[str, ...]:
    """The version rows of a SQLite file, read with the stdlib driver alone.

    The read-only path of ``status``/``plan`` for SQLite: importing
    SQLAlchemy (~0.2 s) would cost more than the reads themselves, and a
    read-only SQLite connection through SQLAlchemy is this same
    ``sqlite3.connect("file:...?mode=ro")`` anyway.  Never creates the file
    (:class:`NoDatabase` when it is missing) or the table (``()``).
    Connection failures are a redacted :class:`DatabaseError`, like
    :func:`orch.store.db.connect`'s.
    """
    import sqlite3

    if not path.exists():
        raise NoDatabase(str(path))
    uri = f"file:{quote(str(path), safe='/')}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=timeout or 5.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseError(describe_error(exc)) from exc
    try:
        quoted = '"' + version_table.replace('"', '""') + '"'
        try:
            rows = con.execute(f"SELECT version_num FROM {quoted}").fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):
                return ()
            raise
        return tuple(sorted(str(r[0]) for r in rows))
    finally:
        con.close()


def transactional(engine: Engine) -> None:
    """The pysqlite recipe: no implicit transactions from the driver, an explicit BEGIN."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


# SQLite's own words for "this user may not write here" say neither what nor where
_HINTS = {
    "attempt to write a readonly database": (
        " (the SQLite file, or the directory it is in, is not writable by this user)"
    ),
    "unable to open database file": (
        " (the SQLite file cannot be opened or created: its directory must exist and be "
        "writable by this user)"
    ),
}


class _FileLock(LockPrimitive):
    """``flock`` on the file beside the database; dies with the process."""

    def __init__(self, path: Path | None) -> None:
        self._fd: int | None = None
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

    def attempt(self) -> bool:
        if self._fd is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        self.close()  # closing the descriptor drops the flock


class SQLite(Backend):
    """SQLite through pysqlite (``sqlite://``) or aiosqlite (``sqlite+aiosqlite://``)."""

    name = "sqlite"
    label = "SQLite"
    recommended = {"sqlite": "sqlite"}
    transactional_ddl = True  # with the BEGIN recipe of :func:`transactional`
    lock_needs_connection = False
    reads_without_sqlalchemy = True

    @property
    def path(self) -> Path | None:
        """The database file (None: in memory)."""
        return sqlite_path(self.url)

    def identity(self, schema: str | None, table: str) -> tuple[str, ...]:
        path = self.path
        if path is not None:
            return ("sqlite", str(path.resolve()), schema or "main", table)
        return super().identity(schema, table)

    def url_problem(self) -> str | None:
        """In-memory SQLite: every connection gets its own empty database.

        orch connects several times per database (lock, migration, audit), so a
        migration into memory reports ``done`` and keeps nothing.  Covers
        ``sqlite://``, ``sqlite:///:memory:`` and the URI forms
        (``file::memory:``, ``file:NAME?mode=memory``).
        """
        m = re.match(
            r"^sqlite(?:\+\w+)?://(?:/(?P<path>[^?]*))?(?:\?(?P<query>.*))?$", self.url, re.S
        )
        if not m:
            return None
        path, query = m["path"] or "", m["query"] or ""
        memory = (
            path in ("", ":memory:")
            or (path.startswith("file:") and path[5:].split("?")[0] in ("", ":memory:"))
            or re.search(r"(?:^|&)mode=memory(?:&|$)", query) is not None
        )
        if not memory:
            return None
        return (
            "an in-memory SQLite database: each connection orch opens gets a new, empty one, "
            "so nothing would be kept; give a file path (sqlite:///path/to/file.db)"
        )

    # -- throwaway databases

    def create_database(self, name: str, directory: Path, connect_timeout: float = 5.0) -> str:
        """A new file in *directory* (created on first connect)."""
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{directory / name}.db"

    def drop_database(self, connect_timeout: float = 5.0) -> None:
        """Remove the file and what SQLite keeps beside it (journal, WAL)."""
        path = self.path
        if path is None:
            return
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(f"{path}{suffix}")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DatabaseError(f"cannot remove {path}{suffix}: {exc.strerror}") from exc

    # -- connecting

    def _writable_directory(self) -> None:
        path = self.path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # writers only
        except OSError as exc:
            raise DatabaseError(
                f"cannot create the directory of the SQLite file {path}: "
                f"{exc.strerror}: {exc.filename}"
            ) from exc

    def connect_args(self, connect_timeout: float, *, readonly: bool) -> dict[str, Any]:
        return {"timeout": max(connect_timeout or 5.0, 5.0)}  # the busy timeout

    def configure_engine(self, engine: Engine, connect_timeout: float) -> None:
        transactional(engine)

    def make_engine(
        self, connect_timeout: float = 5.0, *, readonly: bool = False, **options: Any
    ) -> Engine:
        """Read-only engines never create the file (:class:`NoDatabase`); writers its directory."""
        if self.is_async:
            return self.sync().make_engine(connect_timeout, readonly=readonly, **options)
        path = self.path
        if readonly and path is not None:
            import sqlite3

            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            if not path.exists():
                raise NoDatabase(str(path))
            uri = f"file:{quote(str(path), safe='/')}?mode=ro"

            def creator() -> sqlite3.Connection:
                return sqlite3.connect(uri, uri=True, timeout=connect_timeout or 5.0)

            engine = create_engine("sqlite://", creator=creator, poolclass=NullPool, **options)
            transactional(engine)
            return engine
        self._writable_directory()
        return super().make_engine(connect_timeout, readonly=readonly, **options)

    def async_connect_args(self, connect_timeout: float) -> dict[str, Any]:
        # aiosqlite hands ``timeout`` (the busy timeout) to sqlite3
        path = self.path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return {"timeout": max(connect_timeout or 5.0, 5.0)}

    def configure_async_engine(self, engine: AsyncEngine) -> None:
        transactional(engine.sync_engine)

    # -- version tables

    def read_versions_directly(
        self, schema: str | None, table: str, timeout: float
    ) -> tuple[str, ...] | None:
        path = self.path
        if path is None or schema:  # an attached schema: SQLAlchemy reads it
            return None
        return read_sqlite_versions(path, table, timeout)

    def alembic_options(self, *, as_sql: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {"render_as_batch": True}  # ALTER TABLE by table copy
        if not as_sql:
            # with the pysqlite BEGIN recipe DDL really is transactional on SQLite
            opts["transactional_ddl"] = True
        return opts

    # -- the migration lock

    def lock(
        self, conn: Connection | None, schema: str | None, table: str, *, who: str = ""
    ) -> LockPrimitive:
        return _FileLock(self.path)

    def lock_held(self, conn: Connection | None, schema: str | None, table: str) -> bool:
        """No connection, no SQLAlchemy import: a SQLite ``status`` stays light."""
        path = self.path
        if path is None:
            return False
        lp = lock_path(path)
        if not lp.exists():
            return False
        return sqlite_file_locked(lp)

    # -- hooks and errors

    def client_params(self, default_user: str) -> ClientParams:
        """``{database}`` is the file path; SQLite has no host, port or login."""
        from sqlalchemy.engine import make_url

        return ClientParams("", "", "", make_url(self.url).database or "", None)

    @classmethod
    def error_hint(cls, module: str, message: str) -> str:
        return _HINTS.get(message, "") if module == "sqlite3" else ""
