"""Engines and connections for every backend, read-only paths included.

Every engine uses NullPool: a pooled connection would keep a MySQL GET_LOCK
or a PostgreSQL advisory lock alive after orch thinks it has let go, and orch
never reuses connections anyway.  What differs per server (connect
arguments, the SQLite transactional-DDL recipe, PyMySQL's handshake bound,
PostgreSQL's shared status engine) is the backend's
(:func:`orch.backends.for_url`); this module is where orch opens them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from orch.backends import Backend, for_url, is_async, sync_url
from orch.backends import describe_error as describe_error
from orch.backends.base import NoDatabase as NoDatabase
from orch.backends.sqlite import lock_path as lock_path
from orch.backends.sqlite import read_sqlite_versions as read_sqlite_versions
from orch.config.registry import DatabaseSpec
from orch.errors import DatabaseError
from orch.redact import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")


def make_engine(url: str, connect_timeout: float = 5.0, *, readonly: bool = False) -> Engine:
    """An engine for one database; read-only engines never create a SQLite file.

    Always synchronous: an async driver's URL gets the sync driver of the same
    server (:func:`orch.backends.sync_url`); migrations through the async driver
    itself go through :func:`orch.store.aio.run_on_connection`.
    """
    return _backend(url).make_engine(connect_timeout, readonly=readonly)


def _backend(url: str) -> Backend:
    try:
        return for_url(url)
    except ValueError as exc:  # no family orch knows: the registry refuses these first
        raise DatabaseError(f"cannot use URL {redact(url)}: {redact(str(exc))}") from exc


def preload_drivers(urls: Iterable[str | None]) -> None:
    """Import the SQLAlchemy dialect and the driver of every URL, in this thread.

    SQLAlchemy loads dialect modules lazily on first use; two threads making
    the first engine of one dialect at once can see the half-imported package
    ("cannot access submodule 'mysql' of module 'sqlalchemy.dialects'").
    Callers that fan out over threads call this first.  Unusable URLs are
    left for the threads to report.
    """

    seen: set[str] = set()
    for url in urls:
        if not url:
            continue
        # an async URL: its driver migrates, its sync twin reads (see orch.store.aio)
        if is_async(url) and "async" not in seen:
            seen.add("async")
            with contextlib.suppress(Exception):  # greenlet missing: reported on connect
                import sqlalchemy.ext.asyncio  # noqa: F401
        for one in (url, sync_url(url)) if is_async(url) else (url,):
            scheme = one.split("://", 1)[0]
            if scheme in seen or _without_sqlalchemy(one):
                continue
            from sqlalchemy.engine import make_url

            seen.add(scheme)
            with contextlib.suppress(Exception):  # reported, redacted, by whoever connects
                make_url(one).get_dialect().import_dbapi()


def _without_sqlalchemy(url: str) -> bool:
    """Whether ``status`` reads *url* with no SQLAlchemy dialect to preload."""
    try:
        b = for_url(url)
    except ValueError:
        return False  # reported, redacted, by whoever connects
    return b.reads_without_sqlalchemy and not b.is_async


def connect(
    url: str, connect_timeout: float = 5.0, *, readonly: bool = False, shared: bool = False
) -> Connection:
    """Open one connection; connection errors become a redacted DatabaseError.

    *shared* (for reads that need no per-database dialect state, such as
    ``status``): the connection may come from an Engine the databases of one
    server share, where the backend has one
    (:func:`orch.backends.postgresql.shared_engine`).
    """
    if shared:
        conn = _backend(url).shared_connect(connect_timeout)
        if conn is not None:
            return conn
    engine = make_engine(url, connect_timeout, readonly=readonly)
    try:
        return engine.connect()
    except Exception as exc:
        raise DatabaseError(describe_error(exc)) from exc


class MissingSchema(DatabaseError):
    """``version_table_schema`` names a schema (MySQL: a database) the server does not have."""


def check_version_schema(conn: Connection, db: DatabaseSpec) -> None:
    """Raise :class:`MissingSchema` unless *db*'s ``version_table_schema`` exists.

    Alembic would fail half-way into its first CREATE TABLE with a driver
    message; orch says which setting names what, and does not create the
    schema itself: who owns a schema and who may use it is the DBA's call.
    """
    schema = db.version_table_schema
    if not schema:
        return
    from sqlalchemy import inspect

    if inspect(conn).has_schema(schema):
        return
    how = for_url(str(conn.engine.url)).missing_schema_hint(schema)
    raise MissingSchema(
        f"{db.name}: version_table_schema {schema!r} does not exist in this database; "
        f"{how}, or change databases.{db.name}.version_table_schema in the registry"
    )


def read_current_readonly(conn: Connection, db: DatabaseSpec) -> tuple[str, ...]:
    """:func:`read_current` in one round trip, for connections that only read.

    The SELECT is tried first; only when it fails is the catalog asked
    whether the table exists (a database never migrated), so the usual case
    costs one query instead of two.  A failed statement aborts a PostgreSQL
    transaction, so this rolls the connection back on that path: use it only
    on a connection with no work of its own in flight.
    """
    from sqlalchemy import inspect, text

    try:
        rows = conn.execute(text(f"SELECT version_num FROM {version_table_sql(conn, db)}"))
        return tuple(sorted(str(r) for r in rows.scalars().all()))
    except Exception as exc:
        try:
            conn.rollback()
            exists = inspect(conn).has_table(db.version_table, schema=db.version_table_schema)
        except Exception:
            raise exc from None  # the connection is gone: report the first failure
        if exists:
            raise
        conn.rollback()
        return ()


def version_table_sql(conn: Connection, db: DatabaseSpec) -> str:
    """*db*'s version table as SQL names it on *conn* (quoted, with its schema if any)."""
    table = conn.dialect.identifier_preparer.quote(db.version_table)
    if db.version_table_schema:
        schema = conn.dialect.identifier_preparer.quote_schema(db.version_table_schema)
        table = f"{schema}.{table}"
    return table


def read_current(conn: Connection, db: DatabaseSpec) -> tuple[str, ...]:
    """The version rows of *db* (``()`` when the version table does not exist).

    Plain SQL instead of Alembic's MigrationContext keeps ``status`` free of
    Alembic imports; never creates the table.
    """
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table(db.version_table, schema=db.version_table_schema):
        return ()
    found = conn.execute(text(f"SELECT version_num FROM {version_table_sql(conn, db)}"))
    return tuple(sorted(str(r) for r in found.scalars().all()))


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def os_user() -> str:
    for var in ("USER", "LOGNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except Exception:  # pragma: no cover
        return "unknown"
