"""The :class:`Backend` interface: everything orch does differently per database server.

One object per URL (:func:`orch.backends.for_url`).  Its class is the
server family (:mod:`~orch.backends.sqlite`, :mod:`~orch.backends.postgresql`,
:mod:`~orch.backends.mysql` for MySQL and MariaDB); its :attr:`~Backend.driver`
says which driver of that family the URL names, async drivers included
(asyncpg, aiosqlite, aiomysql, asyncmy are variants of their family, with
their own connect arguments).  Code above this package asks the object and
never branches on a backend's name: adding a server means adding a class
here, not an ``elif`` in ten modules.

SQLAlchemy and the drivers are imported inside the methods that need them:
``orch --help`` imports this package and must stay fast.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orch.errors import DatabaseError
from orch.redact import redact, redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine


class NoDatabase(Exception):
    """A read-only open of a SQLite file that does not exist (nothing was created)."""


#: SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), without importing SQLAlchemy
URL_RE = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)
_LOOPBACK = {"", "localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Driver:
    """One URL scheme orch knows: which family, which module, what to suggest instead.

    *module* is the import name :func:`orch.backends.driver_problem` looks for
    (None: nothing to install).  *fix* is the scheme to suggest when that
    driver is unsupported or usually missing (``postgresql://`` means
    psycopg2).  *sync_scheme* is set for the async drivers: the scheme of
    the synchronous driver of the same server, which orch reads through.
    """

    scheme: str
    family: type[Backend]
    module: str | None
    fix: str | None = None
    #: an async driver's synchronous twin (same server, same family)
    sync_driver: Driver | None = None

    @property
    def sync_scheme(self) -> str | None:
        return self.sync_driver.scheme if self.sync_driver is not None else None

    @property
    def name(self) -> str:
        """The driver's name as SQLAlchemy spells it after the ``+`` (``""``: the default)."""
        return self.scheme.partition("+")[2]

    @property
    def is_async(self) -> bool:
        return self.sync_scheme is not None


@dataclass(frozen=True)
class ClientParams:
    """What a command-line client (``pg_dump``, ``mysqldump``) needs, password apart."""

    host: str
    port: str
    user: str
    database: str
    password: str | None


class LockPrimitive(ABC):
    """One attempt at, and the release of, a database's migration lock.

    :mod:`orch.store.locks` owns the waiting (polling, timeout, giving up on
    a stop, lock order); a backend owns only what one attempt is.  Every
    primitive dies with its connection or process: a killed orch leaves no
    stale lock.
    """

    @abstractmethod
    def attempt(self) -> bool:
        """Try once without waiting; True when the lock is now held."""

    def release(self) -> None:  # noqa: B027  a hook: by default nothing
        """Let go (errors are the caller's to ignore: the connection closes next)."""

    def close(self) -> None:  # noqa: B027  a hook: by default nothing
        """Free what :meth:`attempt` needs, lock or not (after a failed wait, too)."""


class Backend(ABC):
    """A database URL and everything its server does differently.

    Class attributes describe the family; the instance knows its URL and
    driver.  Subclasses override what differs; the defaults here are what
    a server without the feature does.
    """

    #: the family, as orch shows it (``status --json``'s ``backend``, ``--sql`` headers)
    name: ClassVar[str] = ""
    #: the server's name in messages
    label: ClassVar[str] = ""
    #: spelled family -> the scheme orch suggests for it (``mariadb`` -> ``mariadb+pymysql``)
    recommended: ClassVar[dict[str, str]] = {}
    #: the port a URL without one means (None: no network)
    default_port: ClassVar[int | None] = None
    #: the longest identifier the server takes, in bytes (None: no limit orch checks)
    max_identifier: ClassVar[int | None] = None
    #: whether a failed revision is rolled back completely (DDL included)
    transactional_ddl: ClassVar[bool] = False
    #: the variable the server's command-line clients read the password from
    password_env: ClassVar[str | None] = None
    #: whether the migration lock is taken on a database connection (else: a file)
    lock_needs_connection: ClassVar[bool] = True
    #: whether ``status`` reads the version table without SQLAlchemy (no driver to preload)
    reads_without_sqlalchemy: ClassVar[bool] = False
    #: whether the audit log may close one row and open the next in one statement
    chained_audit_rows: ClassVar[bool] = False
    #: a SQL expression that, selected in the statement writing a run's first ``running``
    #: row, lets that row's commit skip the wait for its durable flush (None: the row
    #: commits as any transaction does)
    marker_commit_select: ClassVar[str | None] = None
    #: SQL that makes a session read-only (autogenerate, drift), if the server has it
    readonly_session_sql: ClassVar[str | None] = None
    #: how a fleet's per-tenant ``schema`` is reached: ``"search_path"`` (the migration
    #: connection's), ``"database"`` (a schema is a database of the URL's server), or
    #: None (the server has no schemas: ``{tenant}`` goes in the URL instead)
    tenant_schema: ClassVar[str | None] = None
    #: whether the tenants that are schemas of one database can be read together, in a
    #: few queries for the whole database (catalog, version rows, advisory locks, hashes:
    #: see :func:`orch.planning.live.read_live_schemas`); else each is read alone
    reads_schema_tenants_together: ClassVar[bool] = False

    def __init__(self, url: str, driver: Driver, *, shown: str | None = None) -> None:
        self.url = url
        self.driver = driver
        #: the URL as the user wrote it (an async URL for its sync twin): what errors name
        self.shown = shown if shown is not None else url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display()}>"

    # -- the URL

    @property
    def scheme(self) -> str:
        return self.driver.scheme

    @property
    def is_async(self) -> bool:
        """Whether the URL names one of the async drivers orch migrates through."""
        return self.driver.is_async

    def display(self) -> str:
        """The URL as orch shows it: password masked, see :func:`orch.redact.redact_url`."""
        return redact_url(self.shown)

    def sync_url(self) -> str:
        """The URL of the same database through the synchronous driver (unchanged if sync).

        Only the scheme changes, plus the query options a family's drivers
        spell differently (:meth:`_sync_rest`).  Host, port, login, database
        and every other option stay as written.
        """
        if self.driver.sync_driver is None:
            return self.url
        rest = self._sync_rest(self.url.split("://", 1)[1])
        return f"{self.driver.sync_driver.scheme}://{rest}"

    def _sync_rest(self, rest: str) -> str:
        """The URL after ``://``, as the family's synchronous driver takes it."""
        return rest

    def sync(self) -> Backend:
        """The backend of :meth:`sync_url` (``self`` for a synchronous driver)."""
        if self.driver.sync_driver is None:
            return self
        return type(self)(self.sync_url(), self.driver.sync_driver, shown=self.shown)

    def identity(self, schema: str | None, table: str) -> tuple[str, ...]:
        """Which version table the URL and *schema* denote: server, database, schema, table.

        Two URLs with one identity share one history.  Not user or password;
        loopback names count as one host and default ports are filled in.
        """
        m = URL_RE.match(self.url)
        if not m:
            return (self.url, schema or "", table)
        host, port, database = self._server(m)
        return (self.name, f"{host}:{port}", database, schema or "", table)

    def _server(self, m: re.Match[str]) -> tuple[str, str, str]:
        """(host, port, database) of a parsed URL, as the server would read them."""
        query = dict(part.partition("=")[::2] for part in (m["query"] or "").split("&") if part)
        host = (query.get("host") or m["ipv6host"] or m["ipv4host"] or "").lower()
        host = "localhost" if host in _LOOPBACK else host
        default = "" if self.default_port is None else str(self.default_port)
        port = m["port"] or query.get("port") or default
        database = m["database"] or query.get("dbname") or ""
        return host, port, database

    def url_problem(self) -> str | None:
        """Why this URL cannot hold a migrated database (None: it can)."""
        return None

    def identifier_problem(self, names: list[tuple[str, str, int]]) -> str | None:
        """The first of *names* (key, name, room taken by a suffix) too long for the server.

        Alembic names the version table's primary key ``<table>_pkc``: the
        version table has 4 characters less than the server's limit.
        """
        limit = self.max_identifier
        if limit is None:
            return None
        for key, name, suffix in names:
            most = limit - suffix
            if len(name.encode()) > most:
                why = f"; {self.label} takes identifiers of at most {limit}"
                if suffix:
                    why = (
                        f"; Alembic names its primary key '<table>_pkc', and {self.label} "
                        f"takes identifiers of at most {limit}"
                    )
                return (
                    f"{key} {name!r} is {len(name.encode())} characters long (at most {most}){why}"
                )
        return None

    # -- connecting

    def connect_args(self, connect_timeout: float, *, readonly: bool) -> dict[str, Any]:
        """The synchronous driver's connect arguments for this connect timeout."""
        return {}

    def configure_engine(self, engine: Engine, connect_timeout: float) -> None:  # noqa: B027  a hook: by default nothing
        """Event listeners a synchronous engine of this server needs."""

    def make_engine(
        self, connect_timeout: float = 5.0, *, readonly: bool = False, **options: Any
    ) -> Engine:
        """A NullPool engine through the synchronous driver (:func:`orch.store.db.make_engine`);
        *options* go to ``create_engine`` (the dialect's own)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        if self.is_async:
            return self.sync().make_engine(connect_timeout, readonly=readonly, **options)
        args = self.connect_args(connect_timeout, readonly=readonly)
        try:
            engine = create_engine(self.url, poolclass=NullPool, connect_args=args, **options)
        except Exception as exc:  # bad URL, missing driver
            raise DatabaseError(f"cannot use URL {redact(self.shown)}: {redact(str(exc))}") from exc
        self.configure_engine(engine, connect_timeout)
        return engine

    def async_connect_args(self, connect_timeout: float) -> dict[str, Any]:
        """The async driver's connect arguments for this connect timeout."""
        return {}

    def configure_async_engine(self, engine: AsyncEngine) -> None:  # noqa: B027  a hook: by default nothing
        """Event listeners an async engine of this server needs (on its ``sync_engine``)."""

    def make_async_engine(self, connect_timeout: float = 5.0) -> AsyncEngine:
        """A NullPool AsyncEngine through the URL's async driver (see :mod:`orch.store.aio`)."""
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        args = self.async_connect_args(connect_timeout)
        try:
            engine = create_async_engine(self.url, poolclass=NullPool, connect_args=args)
        except Exception as exc:  # bad URL, missing driver or greenlet
            raise DatabaseError(f"cannot use URL {redact(self.url)}: {redact(str(exc))}") from exc
        self.configure_async_engine(engine)
        return engine

    def shared_connect(self, connect_timeout: float) -> Connection | None:
        """A read-only connection from an engine shared by many databases, if the family has one.

        None: open a connection of its own (:func:`orch.store.db.connect`).
        """
        return None

    # -- sessions and version tables

    def session_setup(self, conn: Connection, ddl_lock_timeout: float | None) -> None:  # noqa: B027  a hook: by default nothing
        """Per-session settings of a migration connection."""

    def tenant_url(self, schema: str) -> str:
        """The URL a tenant whose data lives in *schema* connects to."""
        return self.with_database(schema) if self.tenant_schema == "database" else self.url

    #: after :meth:`enter_schema`, an unqualified name means that schema's table
    #: (PostgreSQL's search_path); a run then names its own tables without the schema
    schema_scopes_names = False

    def enter_schema(self, conn: Connection, schema: str) -> bool | None:
        """Make *schema* the one a tenant's migrations create their objects in.

        Called on the migration connection before each tenant's run: one
        connection may serve several tenants of one database in turn.
        Returns whether the schema exists when that came with it (None: not
        asked; the caller checks).  By default nothing is done.
        """
        return None

    def single_statements(self, conn: Connection) -> contextlib.AbstractContextManager[None]:
        """Statements that each commit by themselves inside (no BEGIN, no COMMIT sent).

        For the one-statement steps of a run (the lock, a read under it): a
        driver that opens a transaction for every statement costs two more
        round trips each.  By default the statements run as usual; call it
        with no transaction open.
        """
        return contextlib.nullcontext()

    def missing_schema_hint(self, schema: str) -> str:
        """How to create a ``version_table_schema`` the server does not have."""
        return f'create it first: CREATE SCHEMA "{schema}"'

    def read_versions_directly(
        self, schema: str | None, table: str, timeout: float
    ) -> tuple[str, ...] | None:
        """The version rows read without SQLAlchemy, or None when this URL has no such path.

        Raises :class:`NoDatabase` when there is no database to read.
        """
        return None

    def alembic_options(self, *, as_sql: bool) -> dict[str, Any]:
        """Options for Alembic's ``context.configure`` that depend on the server."""
        return {"render_as_batch": False}

    # -- the migration lock

    def lock_name(self, schema: str | None, table: str) -> str:
        """A stable name for the lock of a version table (<= 64 characters)."""
        import hashlib

        ident = f"{(schema or '').lower()}.{table.lower()}"
        return "orch:" + hashlib.sha1(ident.encode()).hexdigest()[:40]

    @abstractmethod
    def lock(
        self, conn: Connection | None, schema: str | None, table: str, *, who: str = ""
    ) -> LockPrimitive:
        """The migration lock of a version table.

        *conn* is the migration connection (None where
        :attr:`lock_needs_connection` is false); *who* names the database in
        errors.  Creating the primitive may already touch the system (the
        SQLite lock file); :meth:`LockPrimitive.close` undoes that.
        """

    def lock_held(self, conn: Connection | None, schema: str | None, table: str) -> bool:
        """Whether another session holds the lock now (a read-only probe)."""
        return False

    # -- throwaway databases (``orch test``, the pytest plugin)

    #: databases to connect to for CREATE/DROP DATABASE, tried in order (None: the server)
    admin_databases: ClassVar[tuple[str | None, ...]] = (None,)

    def with_database(self, database: str | None) -> str:
        """This URL with another database (None: the server alone), password kept.

        For orch's own connections only; what users see goes through
        :meth:`display`.
        """
        from sqlalchemy.engine import URL, make_url

        u = make_url(self.url)
        # URL.set() ignores None: build the URL anew to leave the database out
        other = URL.create(
            u.drivername, u.username, u.password, u.host, u.port, database, dict(u.query)
        )
        return other.render_as_string(hide_password=False)

    def quote_database(self, name: str) -> str:
        """*name* as the server's SQL quotes a database name."""
        return '"' + name.replace('"', '""') + '"'

    def create_database_sql(self, name: str) -> list[str]:
        """The statements to try, in order, to create database *name* (the first that works)."""
        return [f"CREATE DATABASE {self.quote_database(name)}"]

    def drop_database_sql(self, name: str) -> list[str]:
        """The statements to try, in order, to drop database *name* if it exists."""
        return [f"DROP DATABASE IF EXISTS {self.quote_database(name)}"]

    def create_database(self, name: str, directory: Path, connect_timeout: float = 5.0) -> str:
        """A new, empty database *name* beside this URL (same server and login); its URL.

        Through the synchronous driver: the URL returned is the sync twin's
        for an async URL.  A file-based family puts it in *directory*.  The
        login must be allowed to create databases.
        """
        if self.is_async:
            return self.sync().create_database(name, directory, connect_timeout)
        self._admin(self.create_database_sql(name), connect_timeout)
        return self.with_database(name)

    def drop_database(self, connect_timeout: float = 5.0) -> None:
        """Drop this URL's database, made by :meth:`create_database` (none left: nothing)."""
        from sqlalchemy.engine import make_url

        if self.is_async:
            return self.sync().drop_database(connect_timeout)
        name = make_url(self.url).database
        if not name:
            raise DatabaseError(f"{self.display()}: names no database to drop")
        self._admin(self.drop_database_sql(name), connect_timeout)
        return None

    def _admin(self, statements: list[str], connect_timeout: float) -> None:
        """Run the first of *statements* that works, in autocommit, from an admin database.

        Never connected to the database being created or dropped: a
        maintenance database (:attr:`admin_databases`), the next one when the
        server does not have it.
        """
        from sqlalchemy import text

        last: Exception | None = None
        for database in self.admin_databases:
            admin = type(self)(self.with_database(database), self.driver)
            engine = admin.make_engine(connect_timeout).execution_options(
                isolation_level="AUTOCOMMIT"
            )
            try:
                with engine.connect() as conn:
                    for statement in statements:
                        try:
                            conn.execute(text(statement))
                            return
                        except Exception as exc:
                            last = exc
            except Exception as exc:  # cannot connect to this admin database
                last = exc
            finally:
                engine.dispose()
        assert last is not None
        raise DatabaseError(describe_error(last)) from last

    # -- the hooks' values and errors

    def client_params(self, default_user: str) -> ClientParams:
        """The values a hook gets, the client's defaults filled in (never ``-h ''``)."""
        from sqlalchemy.engine import make_url

        u = make_url(self.url)
        query_host = u.query.get("host")
        if isinstance(query_host, tuple):
            query_host = query_host[0] if query_host else None
        host = u.host or query_host or "localhost"
        default = "" if self.default_port is None else str(self.default_port)
        port = str(u.port) if u.port else default
        password = u.password
        return ClientParams(
            host,
            port,
            u.username or default_user,
            u.database or "",
            str(password) if password is not None else None,
        )

    @classmethod
    def error_message(cls, err: BaseException, module: str) -> str | None:
        """One line for a driver error of this family (None: the generic wording)."""
        return None

    @classmethod
    def error_hint(cls, module: str, message: str) -> str:
        """Words to add to a driver's message that says neither what nor where."""
        return ""


def describe_error(exc: BaseException) -> str:
    """One line for a driver error, without SQL parameters or passwords.

    Each family may word its driver's errors (:meth:`Backend.error_message`)
    or add a hint to them (:meth:`Backend.error_hint`).
    """
    orig = getattr(exc, "orig", None)
    err = orig if orig is not None else exc
    module = type(err).__module__.split(".")[0]
    families = Backend.__subclasses__()
    msg = next((m for m in (f.error_message(err, module) for f in families) if m), None)
    if msg is None:
        if isinstance(err, OSError) and err.strerror:
            # an OSError is (errno, strerror) too: not a driver error; name the file
            msg = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
        else:
            msg = str(err).strip()
            msg += "".join(f.error_hint(module, msg) for f in families)
    msg = msg.split("\n(Background on this error")[0]
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    return redact(text)
