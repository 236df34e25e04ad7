"""PostgreSQL through psycopg 3, or asyncpg for migrations.

- The migration lock is a *session* advisory lock on the migration
  connection (a transaction-scoped one would be released by Alembic's
  ``autocommit_block()``), keyed by the version table: advisory locks are
  per server database already.
- DDL is transactional: a failed revision leaves nothing behind.
- ``status`` over a fleet shares one Engine per server and login
  (:func:`shared_engine`), picking the database per connection: the one
  place orch relies on how SQLAlchemy hands libpq its arguments.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orch.backends.base import URL_RE, Backend, LockPrimitive, describe_error
from orch.errors import DatabaseError
from orch.redact import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

#: URL query options that only asyncpg understands (dropped for psycopg)
_ASYNC_ONLY_QUERY = frozenset(
    {
        "prepared_statement_cache_size",
        "prepared_statement_name_func",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "command_timeout",
        "timeout",
    }
)


def advisory_key(schema: str | None, table: str) -> int:
    """A signed 64-bit advisory key; advisory locks are per server database already."""
    ident = f"{schema or ''}.{table}"
    digest = hashlib.blake2b(f"orch:{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _AdvisoryLock(LockPrimitive):
    def __init__(self, conn: Connection, key: int) -> None:
        self.conn = conn
        self.key = key

    def attempt(self) -> bool:
        from sqlalchemy import text

        with _single_statements(self.conn):  # one round trip, not three
            got = self.conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}
            ).scalar()
        self.conn.commit()  # session lock survives; no transaction left open (autobegin trap)
        return bool(got)

    def release(self) -> None:
        from sqlalchemy import text

        with _single_statements(self.conn):
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        self.conn.commit()


@contextlib.contextmanager
def _single_statements(conn: Connection) -> Iterator[None]:
    """psycopg in autocommit mode inside: its own BEGIN and COMMIT are round trips.

    SQLAlchemy still begins and ends its transaction object around the
    statements; psycopg sends nothing for either while in autocommit mode.
    Other drivers (asyncpg through its facade), or a connection in a
    transaction, run the statements as usual.
    """
    raw = _psycopg_connection(conn)
    if raw is None or conn.in_transaction() or raw.autocommit:
        yield
        return
    raw.autocommit = True
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()  # SQLAlchemy's bookkeeping: nothing is open on the server
        with contextlib.suppress(Exception):  # a broken connection: its own error says so
            raw.autocommit = False


def _psycopg_connection(conn: Connection) -> Any:
    """The psycopg 3 connection under *conn*, or None (another driver)."""
    raw = getattr(conn.connection, "driver_connection", None)
    module = type(raw).__module__
    return raw if module.startswith("psycopg") and hasattr(raw, "autocommit") else None


class PostgreSQL(Backend):
    """PostgreSQL through psycopg 3 (``postgresql+psycopg://``) or asyncpg."""

    name = "postgresql"
    label = "PostgreSQL"
    recommended = {"postgresql": "postgresql+psycopg"}
    default_port = 5432
    # NAMEDATALEN - 1 bytes; the server would silently truncate a longer name
    max_identifier = 63
    transactional_ddl = True
    password_env = "PGPASSWORD"
    chained_audit_rows = True  # a data-modifying WITH
    reads_schema_tenants_together = True  # pg_namespace, pg_locks, UNION ALL per schema
    schema_scopes_names = True  # enter_schema sets search_path to the tenant's schema alone
    # The first ``running`` row need not wait for its WAL flush: PostgreSQL rolls a
    # failed revision back anyway, and the revision's own (synchronous) commit
    # flushes everything before it.  Saves one fsync; set in the row's own statement
    # (a transaction-local setting, the statement being its transaction), it also
    # saves the BEGIN, the SET and the COMMIT round trips.
    marker_commit_select = "set_config('synchronous_commit', 'off', true)"
    readonly_session_sql = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
    tenant_schema = "search_path"

    # connect for CREATE/DROP DATABASE to the maintenance database, else template1
    admin_databases = ("postgres", "template1")

    def drop_database_sql(self, name: str) -> list[str]:
        """FORCE (PostgreSQL 13+): a session a failed revision left behind must not keep it."""
        quoted = self.quote_database(name)
        return [
            f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)",
            f"DROP DATABASE IF EXISTS {quoted}",
        ]

    def _sync_rest(self, rest: str) -> str:
        """asyncpg's ``ssl=`` is libpq's ``sslmode=`` (same values); its statement-cache
        and timeout options mean nothing to psycopg (libpq would refuse them)."""
        if "?" not in rest:
            return rest
        from urllib.parse import parse_qsl, urlencode

        head, query = rest.split("?", 1)
        pairs = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in _ASYNC_ONLY_QUERY:
                continue
            pairs.append(("sslmode" if key == "ssl" else key, value))
        return head + (f"?{urlencode(pairs)}" if pairs else "")

    def identity(self, schema: str | None, table: str) -> tuple[str, ...]:
        """The default schema is ``public``; a URL without a database means the user's."""

        m = URL_RE.match(self.url)
        if not m:
            return super().identity(schema, table)
        host, port, database = self._server(m)
        database = database or m["username"] or ""
        return (self.name, f"{host}:{port}", database, schema or "public", table)

    # -- connecting

    def connect_args(self, connect_timeout: float, *, readonly: bool) -> dict[str, Any]:
        timeout = max(1, int(round(connect_timeout))) if connect_timeout else None
        return {"connect_timeout": timeout} if timeout else {}

    def async_connect_args(self, connect_timeout: float) -> dict[str, Any]:
        timeout = max(1.0, float(connect_timeout)) if connect_timeout else None
        return {"timeout": timeout} if timeout else {}  # asyncpg's connect timeout

    def shared_connect(self, connect_timeout: float) -> Connection:
        engine, database = shared_engine(self.sync(), connect_timeout)
        token = _DATABASE.set((database,))
        try:
            return engine.connect()
        except Exception as exc:
            raise DatabaseError(describe_error(exc)) from exc
        finally:
            _DATABASE.reset(token)

    def session_setup(self, conn: Connection, ddl_lock_timeout: float | None) -> None:
        """End orphaned work promptly, fail fast behind DDL locks."""
        from sqlalchemy import text

        try:
            # a backend busy in a long statement checks every second that orch
            # is still there: a SIGKILLed run releases its lock within ~1 s
            with _single_statements(conn):  # a session setting: no transaction needed
                conn.execute(text("SET client_connection_check_interval = '1s'"))
            conn.commit()
        except Exception:  # PostgreSQL < 14
            conn.rollback()
        if ddl_lock_timeout:
            with _single_statements(conn):
                conn.execute(text(f"SET lock_timeout = '{int(ddl_lock_timeout * 1000)}ms'"))
            conn.commit()

    def enter_schema(self, conn: Connection, schema: str) -> bool | None:
        """The search_path set to the tenant's schema alone (quoted: ``tenant_eu-west``),
        and whether that schema exists, in one statement that commits itself."""
        from sqlalchemy import text

        quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
        with self.single_statements(conn):
            exists = conn.execute(
                text(
                    "SELECT set_config('search_path', :path, false), EXISTS (SELECT 1 FROM "
                    "pg_catalog.pg_namespace WHERE nspname = :schema)"
                ),
                {"path": quoted, "schema": schema},
            ).one()[1]
        conn.commit()
        return bool(exists)

    def single_statements(self, conn: Connection) -> contextlib.AbstractContextManager[None]:
        return _single_statements(conn)

    # -- the migration lock

    def lock(
        self, conn: Connection | None, schema: str | None, table: str, *, who: str = ""
    ) -> LockPrimitive:
        if conn is None:
            raise ValueError("a PostgreSQL migration lock needs the migration connection")
        return _AdvisoryLock(conn, advisory_key(schema, table))

    def lock_held(self, conn: Connection | None, schema: str | None, table: str) -> bool:
        if conn is None:
            raise ValueError("is_locked needs a connection for server databases")
        from sqlalchemy import text

        unsigned = advisory_key(schema, table) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
        ).scalar()
        return bool(row)


_SHARED_ENGINES: dict[str, Engine] = {}
_SHARED_LOCK = threading.Lock()
# the database the next connection of a shared engine opens (per thread: a ContextVar)
_DATABASE: contextvars.ContextVar[tuple[str | None]] = contextvars.ContextVar("orch_pg_database")


def shared_engine(backend: Backend, connect_timeout: float) -> tuple[Engine, str | None]:
    """One Engine per PostgreSQL server, login and options; the database is picked per connection.

    A new Engine's first connection runs the dialect's initialisation: five
    queries (server version, current schema, isolation level, ...) plus
    SQLAlchemy's own setup, about 4 ms of CPU per database.  For a fleet of
    hundreds of databases on one server that is most of ``status``'s work,
    and none of it differs between the databases of one server for what
    status reads (its SQL names the version table explicitly and asks the
    catalogs with ``current_database()``).  Only the ``dbname`` connect
    argument changes, through the ``do_connect`` event
    (:func:`_pick_database`; SQLAlchemy's psycopg dialect hands libpq the
    database as ``dbname``, which tests/test_backends_objects.py checks on a
    real server).  Not for reflection or autogenerate: the default schema can
    differ per database.  Extension types (hstore) are not registered by OID:
    those differ per database.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    url = backend.url  # a synchronous driver's
    try:
        u = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"cannot use URL {redact(url)}: {redact(str(exc))}") from exc
    key = f"{connect_timeout}|{u.set(database='').render_as_string(hide_password=False)}"
    with _SHARED_LOCK:
        engine = _SHARED_ENGINES.get(key)
        if engine is None:
            # psycopg's dialect registers hstore by the OID the first connection's database
            # gives it, for every later connection: an extension type's OID differs from one
            # database to the next ("cache lookup failed for type ..."), so the shared
            # Engine binds hstore as text, which every database reads the same way
            engine = backend.make_engine(connect_timeout, use_native_hstore=False)
            _check_dbname(engine)
            event.listen(engine, "do_connect", _pick_database)
            _SHARED_ENGINES[key] = engine
    return engine, u.database


def _check_dbname(engine: Engine) -> None:
    """Fail loudly if the dialect stops handing libpq the database as ``dbname``.

    :func:`_pick_database` rewrites that one connect argument; were it
    renamed, every database of a server would silently read the first one's
    rows.
    """
    from sqlalchemy.engine import make_url

    _args, params = engine.dialect.create_connect_args(make_url("postgresql+psycopg:///probe"))
    if params.get("dbname") != "probe":
        raise DatabaseError(
            "this SQLAlchemy's PostgreSQL dialect no longer passes the database as libpq's "
            "'dbname' connect argument, which orch's shared status engine replaces per "
            "database; orch needs an update for this SQLAlchemy version"
        )


def _pick_database(_dialect: Any, _rec: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    (database,) = _DATABASE.get()
    if database is None:
        cparams.pop("dbname", None)  # libpq's default: the user's name
    else:
        cparams["dbname"] = database
