"""MySQL and MariaDB through PyMySQL, or aiomysql / asyncmy for migrations.

- The migration lock is ``GET_LOCK`` on the migration connection itself (a
  separate idle connection killed by ``wait_timeout`` would release it
  silently).  Lock names are server-wide and case-insensitive, so theirs
  carry the schema the version table lives in.
- DDL is not transactional: a revision that fails half-way leaves a *dirty*
  database, which orch's audit log remembers.
- A schema *is* a database: ``version_table_schema`` replaces the URL's.
- PyMySQL's handshake is bounded by the connect timeout through two private
  attributes (:func:`_restore_timeouts`), the one place orch touches
  PyMySQL's internals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orch.backends.base import URL_RE, Backend, LockPrimitive
from orch.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

_LATIN1_PASSWORD_DRIVERS = frozenset({"pymysql", "aiomysql", "asyncmy"})
#: the driver modules whose errors are (code, message) tuples
_ERROR_MODULES = frozenset({"pymysql", "MySQLdb"})
#: PyMySQL's private per-socket-operation timeouts (stable since PyMySQL 0.7)
PYMYSQL_TIMEOUT_ATTRS = {"read_timeout": "_read_timeout", "write_timeout": "_write_timeout"}


class _GetLock(LockPrimitive):
    def __init__(self, conn: Connection, name: str, who: str) -> None:
        self.conn = conn
        self.name = name
        self.who = who

    def attempt(self) -> bool:
        from sqlalchemy import text

        got = self.conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name}).scalar()
        self.conn.commit()
        if got is None:
            raise RuntimeError(f"{self.who}: GET_LOCK failed on the server")
        return bool(got == 1)

    def release(self) -> None:
        from sqlalchemy import text

        self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
        self.conn.commit()


class MySQL(Backend):
    """MySQL or MariaDB (``mysql+pymysql://``, ``mariadb+pymysql://``, aiomysql, asyncmy)."""

    name = "mysql"
    label = "MySQL/MariaDB"
    recommended = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}
    default_port = 3306
    max_identifier = 64
    transactional_ddl = False
    password_env = "MYSQL_PWD"
    readonly_session_sql = "SET SESSION TRANSACTION READ ONLY"
    tenant_schema = "database"  # a schema is a database: the tenant's URL names it

    def quote_database(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def identity(self, schema: str | None, table: str) -> tuple[str, ...]:
        """A schema is a database: ``version_table_schema`` replaces the URL's."""

        m = URL_RE.match(self.url)
        if not m:
            return super().identity(schema, table)
        host, port, database = self._server(m)
        return (self.name, f"{host}:{port}", schema or database, table)

    # -- connecting

    def connect_args(self, connect_timeout: float, *, readonly: bool) -> dict[str, Any]:
        timeout = max(1, int(round(connect_timeout))) if connect_timeout else None
        args: dict[str, Any] = {}
        if timeout:
            args["connect_timeout"] = timeout
        if readonly:
            args["read_timeout"] = max(timeout or 5, 30)
        return args

    def configure_engine(self, engine: Engine, connect_timeout: float) -> None:
        utf8_password(engine)  # first: the handshake listener connects with its cparams
        timeout = max(1, int(round(connect_timeout))) if connect_timeout else None
        if timeout and getattr(engine.dialect, "driver", "") == "pymysql":
            _pymysql_handshake_timeout(engine, timeout)

    def async_connect_args(self, connect_timeout: float) -> dict[str, Any]:
        timeout = max(1.0, float(connect_timeout)) if connect_timeout else None
        return {"connect_timeout": timeout} if timeout else {}  # aiomysql's and asyncmy's

    def configure_async_engine(self, engine: AsyncEngine) -> None:
        utf8_password(engine.sync_engine)

    def session_setup(self, conn: Connection, ddl_lock_timeout: float | None) -> None:
        """Fail fast behind metadata locks instead of waiting a year (the server's default)."""
        if ddl_lock_timeout:
            from sqlalchemy import text

            conn.execute(text(f"SET SESSION lock_wait_timeout = {max(1, int(ddl_lock_timeout))}"))
            conn.commit()

    def missing_schema_hint(self, schema: str) -> str:
        return f"on MySQL/MariaDB a schema is a database: CREATE DATABASE `{schema}`"

    # -- the migration lock

    def lock_name(self, schema: str | None, table: str) -> str:
        """Lock names are server-wide: the schema is the URL's database unless one is named."""
        if schema is None:
            from sqlalchemy.engine import make_url

            schema = make_url(self.url).database
        return super().lock_name(schema, table)

    def lock(
        self, conn: Connection | None, schema: str | None, table: str, *, who: str = ""
    ) -> LockPrimitive:
        if conn is None:
            raise ValueError("a MySQL migration lock needs the migration connection")
        return _GetLock(conn, self.lock_name(schema, table), who)

    def lock_held(self, conn: Connection | None, schema: str | None, table: str) -> bool:
        if conn is None:
            raise ValueError("is_locked needs a connection for server databases")
        from sqlalchemy import text

        holder = conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": self.lock_name(schema, table)})
        return holder.scalar() is not None

    # -- errors

    @classmethod
    def error_message(cls, err: BaseException, module: str) -> str | None:
        """PyMySQL's and MySQLdb's errors are (code, message) tuples: a sentence instead."""
        args: tuple[Any, ...] = tuple(getattr(err, "args", ()))
        if (
            module in _ERROR_MODULES
            and len(args) == 2
            and isinstance(args[0], int)
            and isinstance(args[1], str)
        ):
            return f"{args[1]} (MySQL error {args[0]})"
        return None


def utf8_password(engine: Engine) -> None:
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


def _pymysql_handshake_timeout(engine: Engine, timeout: int) -> None:
    """Bound PyMySQL's handshake by the connect timeout, not only the TCP connect.

    PyMySQL's ``connect_timeout`` covers the TCP connect only; the server's
    greeting and the authentication are read with ``read_timeout``, which is
    unlimited by default.  A host that accepts the TCP connection and never
    answers (a hung server, a proxy with nothing behind it) would hang
    ``status`` and ``upgrade`` forever.  So the connection is opened with
    read/write timeouts equal to the connect timeout, and the timeouts the URL
    asked for (usually none: a migration may run for hours) are restored once
    the handshake is done (:func:`_restore_timeouts`).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "do_connect")
    def _do_connect(dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        wanted = {k: cparams.get(k) for k in PYMYSQL_TIMEOUT_ATTRS}
        handshake = {k: timeout if v is None else min(float(v), timeout) for k, v in wanted.items()}
        conn = dialect.loaded_dbapi.connect(*cargs, **{**cparams, **handshake})
        try:
            _restore_timeouts(conn, wanted)
        except BaseException:
            try:
                conn.close()
            finally:
                raise
        return conn


def _restore_timeouts(conn: Any, wanted: dict[str, Any]) -> None:
    """Put back the read/write timeouts the URL asked for on an open PyMySQL connection.

    PyMySQL keeps them in the private ``_read_timeout``/``_write_timeout``
    and applies them before every socket operation.  Were they renamed,
    skipping the restore would leave every statement bounded by the
    connect timeout (a migration's long ALTER would die after a few
    seconds), so a missing attribute is an error that says what to do.
    """
    missing = [attr for attr in PYMYSQL_TIMEOUT_ATTRS.values() if not hasattr(conn, attr)]
    if missing:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        try:
            version = installed("PyMySQL")
        except PackageNotFoundError:
            version = "?"
        raise DatabaseError(
            f"PyMySQL {version} has no {', '.join(missing)} on its connections, which orch "
            "sets to bound the handshake by connect_timeout and then lift that bound (without "
            "it every statement would be cut off after connect_timeout); pin PyMySQL to the "
            "release you had before until orch supports this one"
        )
    for key, attr in PYMYSQL_TIMEOUT_ATTRS.items():
        setattr(conn, attr, wanted[key])
