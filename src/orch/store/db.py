"""Engines and connections for the three backends, read-only paths included.

Every engine uses NullPool: a pooled connection would keep a MySQL GET_LOCK
or a PostgreSQL advisory lock alive after orch thinks it has let go, and orch
never reuses connections anyway.  SQLite gets the pysqlite recipe that makes
DDL transactional (``isolation_level=None`` + explicit ``BEGIN``), so a failed
revision rolls back on SQLite as it does on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from orch.config.registry import DatabaseSpec, sqlite_path
from orch.errors import DatabaseError
from orch.redact import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")


def backend(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB counts as mysql)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("mariadb", "mysql"):
        return "mysql"
    if scheme in ("postgres", "postgresql"):
        return "postgresql"
    return scheme


def transactional_ddl(url: str) -> bool:
    """Whether a failed revision is rolled back completely on this backend."""
    return backend(url) in ("postgresql", "sqlite")


class NoDatabase(Exception):
    """A read-only open of a SQLite file that does not exist (nothing was created)."""


def make_engine(url: str, connect_timeout: float = 5.0, *, readonly: bool = False) -> Engine:
    """An engine for one database; read-only engines never create a SQLite file.

    Always synchronous: an async driver's URL gets the sync driver of the same
    server (:func:`orch.store.aio.sync_url`); migrations through the async driver
    itself go through :func:`orch.store.aio.run_on_connection`.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from orch.backends import sync_url

    shown = url  # errors name the URL as the user wrote it
    url = sync_url(url)
    kind = backend(url)
    connect_args: dict[str, Any] = {}
    timeout = max(1, int(round(connect_timeout))) if connect_timeout else None
    if kind == "postgresql":
        if timeout:
            connect_args["connect_timeout"] = timeout
    elif kind == "mysql":
        if timeout:
            connect_args["connect_timeout"] = timeout
        if readonly:
            connect_args["read_timeout"] = max(timeout or 5, 30)
    elif kind == "sqlite":
        path = sqlite_path(url)
        if readonly and path is not None:
            if not path.exists():
                raise NoDatabase(str(path))
            uri = f"file:{quote(str(path), safe='/')}?mode=ro"

            def creator() -> sqlite3.Connection:
                return sqlite3.connect(uri, uri=True, timeout=connect_timeout or 5.0)

            engine = create_engine("sqlite://", creator=creator, poolclass=NullPool)
            _sqlite_transactional(engine)
            return engine
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)  # writers only
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of the SQLite file {path}: "
                    f"{exc.strerror}: {exc.filename}"
                ) from exc
        connect_args["timeout"] = max(connect_timeout or 5.0, 5.0)
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except Exception as exc:  # bad URL, missing driver
        raise DatabaseError(f"cannot use URL {redact(shown)}: {redact(str(exc))}") from exc
    if kind == "sqlite":
        _sqlite_transactional(engine)
    elif kind == "mysql":
        mysql_utf8_password(engine)  # first: the handshake listener connects with its cparams
        if timeout and _is_pymysql(engine):
            _pymysql_handshake_timeout(engine, timeout)
    _ = event  # imported for the listeners above
    return engine


_LATIN1_PASSWORD_DRIVERS = frozenset({"pymysql", "aiomysql", "asyncmy"})


def mysql_utf8_password(engine: Engine) -> None:
    """Send a MariaDB/MySQL password as UTF-8 bytes, as the ``mysql`` client does.

    The server checks the password against the bytes it was set with, which
    are UTF-8 for any ``CREATE USER ... IDENTIFIED BY`` over a utf8/utf8mb4
    connection (the ``mysql`` client's default).  PyMySQL, aiomysql and asyncmy
    encode a ``str`` password as Latin-1 instead: ``pä`` gets "Access denied"
    and ``p€x`` cannot be encoded at all.  aiomysql accepts only ``str`` (it
    calls ``.encode('latin1')`` itself), so the password is handed to all three
    as the ``str`` whose Latin-1 encoding is its UTF-8 bytes: an ASCII password
    is unchanged, any other now logs in.  Done per connection in
    ``do_connect`` (SQLAlchemy passes a fresh copy of the arguments to each
    connect), so the URL, the hooks' ``MYSQL_PWD`` and every message keep the
    password as the user wrote it.  For an async engine, pass its
    ``sync_engine``.
    """
    from sqlalchemy import event

    if getattr(engine.dialect, "driver", "") not in _LATIN1_PASSWORD_DRIVERS:
        return  # mysqlclient and others take the str as it is

    @event.listens_for(engine, "do_connect")
    def _utf8_password(_dialect: Any, _rec: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        password = cparams.get("password")
        if isinstance(password, str):
            cparams["password"] = password.encode("utf-8").decode("latin-1")


def _is_pymysql(engine: Engine) -> bool:
    return getattr(engine.dialect, "driver", "") == "pymysql"


def _pymysql_handshake_timeout(engine: Engine, timeout: int) -> None:
    """Bound PyMySQL's handshake by the connect timeout, not only the TCP connect.

    PyMySQL's ``connect_timeout`` covers the TCP connect only; the server's
    greeting and the authentication are read with ``read_timeout``, which is
    unlimited by default.  A host that accepts the TCP connection and never
    answers (a hung server, a proxy with nothing behind it) would hang
    ``status`` and ``upgrade`` forever.  So the connection is opened with
    read/write timeouts equal to the connect timeout, and the timeouts the URL
    asked for (usually none: a migration may run for hours) are restored once
    the handshake is done.  PyMySQL reads ``_read_timeout``/``_write_timeout``
    before every socket operation (stable since PyMySQL 0.7).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def _do_connect(dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        wanted = {k: cparams.get(k) for k in ("read_timeout", "write_timeout")}
        handshake = {k: timeout if v is None else min(float(v), timeout) for k, v in wanted.items()}
        conn = dialect.loaded_dbapi.connect(*cargs, **{**cparams, **handshake})
        for key, value in wanted.items():
            attr = f"_{key}"
            if hasattr(conn, attr):
                setattr(conn, attr, value)
        return conn


def preload_drivers(urls: Iterable[str | None]) -> None:
    """Import the SQLAlchemy dialect and the driver of every URL, in this thread.

    SQLAlchemy loads dialect modules lazily on first use; two threads making
    the first engine of one dialect at once can see the half-imported package
    ("cannot access submodule 'mysql' of module 'sqlalchemy.dialects'").
    Callers that fan out over threads call this first.  Unusable URLs are
    left for the threads to report.
    """
    from orch.backends import is_async, sync_url

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
            if scheme in seen or scheme == "sqlite":  # status reads SQLite without SQLAlchemy
                continue
            from sqlalchemy.engine import make_url

            seen.add(scheme)
            with contextlib.suppress(Exception):  # reported, redacted, by whoever connects
                make_url(one).get_dialect().import_dbapi()


def _sqlite_transactional(engine: Engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def connect(
    url: str, connect_timeout: float = 5.0, *, readonly: bool = False, shared: bool = False
) -> Connection:
    """Open one connection; connection errors become a redacted DatabaseError.

    *shared* (PostgreSQL only, for reads that need no per-database dialect
    state, such as ``status``): the connection comes from one Engine per
    server and login, see :func:`_shared_pg_engine`.
    """
    if shared and backend(url) == "postgresql":
        from orch.backends import sync_url

        engine, database = _shared_pg_engine(sync_url(url), connect_timeout)
        token = _PG_DATABASE.set((database,))
        try:
            return engine.connect()
        except Exception as exc:
            raise DatabaseError(describe_error(exc)) from exc
        finally:
            _PG_DATABASE.reset(token)
    engine = make_engine(url, connect_timeout, readonly=readonly)
    try:
        return engine.connect()
    except Exception as exc:
        raise DatabaseError(describe_error(exc)) from exc


_SHARED_ENGINES: dict[str, Engine] = {}
_SHARED_LOCK = threading.Lock()
# the database the next connection of a shared engine opens (per thread: a ContextVar)
_PG_DATABASE: contextvars.ContextVar[tuple[str | None]] = contextvars.ContextVar("orch_pg_database")


def _shared_pg_engine(url: str, connect_timeout: float) -> tuple[Engine, str | None]:
    """One Engine per PostgreSQL server, login and options; the database is picked per connection.

    A new Engine's first connection runs the dialect's initialisation: five
    queries (server version, current schema, isolation level, ...) plus
    SQLAlchemy's own setup, about 4 ms of CPU per database.  For a fleet of
    hundreds of databases on one server that is most of ``status``'s work,
    and none of it differs between the databases of one server for what
    status reads (its SQL names the version table explicitly and asks the
    catalogs with ``current_database()``).  Only the ``dbname`` connect
    argument changes, through the ``do_connect`` event.  Not for reflection
    or autogenerate: the default schema can differ per database.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"cannot use URL {redact(url)}: {redact(str(exc))}") from exc
    key = f"{connect_timeout}|{u.set(database='').render_as_string(hide_password=False)}"
    with _SHARED_LOCK:
        engine = _SHARED_ENGINES.get(key)
        if engine is None:
            engine = make_engine(url, connect_timeout)
            event.listen(engine, "do_connect", _pick_pg_database)
            _SHARED_ENGINES[key] = engine
    return engine, u.database


def _pick_pg_database(_dialect: Any, _rec: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    (database,) = _PG_DATABASE.get()
    if database is None:
        cparams.pop("dbname", None)  # libpq's default: the user's name
    else:
        cparams["dbname"] = database


# SQLite's own words for "this user may not write here" say neither what nor where
_SQLITE_HINTS = {
    "attempt to write a readonly database": (
        " (the SQLite file, or the directory it is in, is not writable by this user)"
    ),
    "unable to open database file": (
        " (the SQLite file cannot be opened or created: its directory must exist and be "
        "writable by this user)"
    ),
}


def describe_error(exc: BaseException) -> str:
    """One line for a driver error, without SQL parameters or passwords."""
    orig = getattr(exc, "orig", None)
    err = orig if orig is not None else exc
    args: tuple[Any, ...] = tuple(getattr(err, "args", ()))
    module = type(err).__module__.split(".")[0]
    if (
        module in ("pymysql", "MySQLdb")
        and len(args) == 2
        and isinstance(args[0], int)
        and isinstance(args[1], str)
    ):
        # PyMySQL errors are (code, message) tuples: print them as a sentence
        msg = f"{args[1]} (MySQL error {args[0]})"
    elif isinstance(err, OSError) and err.strerror:
        # an OSError is (errno, strerror) too: not a MySQL error; name the file
        msg = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        msg = str(err).strip()
        if module == "sqlite3":
            msg += _SQLITE_HINTS.get(msg, "")
    msg = msg.split("\n(Background on this error")[0]
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    return redact(text)


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
    if backend(str(conn.engine.url)) == "mysql":
        how = f"on MySQL/MariaDB a schema is a database: CREATE DATABASE `{schema}`"
    else:
        how = f'create it first: CREATE SCHEMA "{schema}"'
    raise MissingSchema(
        f"{db.name}: version_table_schema {schema!r} does not exist in this database; "
        f"{how}, or change databases.{db.name}.version_table_schema in the registry"
    )


def read_sqlite_versions(path: Path, version_table: str, timeout: float = 5.0) -> tuple[str, ...]:
    """The version rows of a SQLite file, read with the stdlib driver alone.

    The read-only path of ``status``/``plan`` for SQLite: importing
    SQLAlchemy (~0.2 s) would cost more than the reads themselves, and a
    read-only SQLite connection through SQLAlchemy is this same
    ``sqlite3.connect("file:...?mode=ro")`` anyway.  Never creates the file
    (:class:`NoDatabase` when it is missing) or the table (``()``).
    Connection failures are a redacted :class:`DatabaseError`, like
    :func:`connect`'s.
    """
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
        rows = conn.execute(text(f"SELECT version_num FROM {_version_table(conn, db)}"))
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


def _version_table(conn: Connection, db: DatabaseSpec) -> str:
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
    table = conn.dialect.identifier_preparer.quote(db.version_table)
    if db.version_table_schema:
        table = f"{conn.dialect.identifier_preparer.quote_schema(db.version_table_schema)}.{table}"
    rows = conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
    return tuple(sorted(str(r) for r in rows))


def lock_path(db_file: Path) -> Path:
    """The file orch locks beside a SQLite database (never the database itself)."""
    return db_file.with_name(db_file.name + ".orch-lock")


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
