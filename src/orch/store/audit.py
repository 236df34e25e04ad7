"""orch's bookkeeping table in each database: the audit trail and the dirty marker.

One row per step (a revision applied or undone, a stamp, a hook).  The row
of a revision is committed as ``running`` *before* its first statement (for
all but the first revision of a run, inside the previous revision's
transaction) and set to its outcome inside the revision's own transaction.
``orch log`` thus shows a run live.  On MySQL/MariaDB, where DDL cannot roll
back, the row is the evidence of a crash or failure half-way: the database is
``dirty`` until an operator repairs it and stamps.  On PostgreSQL and SQLite a
killed run's ``running`` row is closed as interrupted (rolled back) by the
next run; the database is not dirty.

The table has a shape version of its own (:data:`TABLE_VERSION`), kept in a
row of its own (direction ``table_version``, database ``""``, which every
reader, older orchs' included, filters out; no such row means version 1, the
shape before orch recorded file hashes).  A row rather than a table beside
it: nothing new for autogenerate, ``orch test`` or a DBA to exclude.  A
newer orch upgrades an older table in place under the migration lock
(:meth:`AuditLog.ensure`), keeping every row; an older orch that meets a
newer table refuses to write (:class:`TableTooNew`) and still reads it
(``status``, ``log``).

Each applied revision's row carries the sha256 of its file's bytes
(``sha256``); ``adopt`` rows record a baseline for revisions applied before
orch recorded hashes (by plain Alembic, or by an older orch), ``accept``
rows an operator's acceptance of an edited file.  :func:`recorded_hashes`
reads, per revision, the last of these.
"""

from __future__ import annotations

import datetime as dt
import functools
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch import __version__
from orch.backends import describe_error, for_url
from orch.errors import EXIT_USAGE, DatabaseError, OrchError
from orch.redact import redact
from orch.store.db import os_user, version_table_sql
from orch.store.locks import is_locked

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from orch.config.registry import DatabaseSpec, Registry

MIGRATION_DIRECTIONS = ("upgrade", "downgrade", "stamp")
#: the directions of rows whose ``sha256`` says what a revision's file was when it ran here
#: (``upgrade``), when orch first saw it applied (``adopt``), or when an operator accepted
#: its edit (``accept``)
HASH_DIRECTIONS = ("upgrade", "adopt", "accept")
#: the shape of the audit table this orch writes (1: before the ``sha256`` column; 2: before
#: the ``scope`` column)
TABLE_VERSION = 3
#: the ``direction`` of the row that says the table's version (in ``detail``); its ``db`` is
#: ``""``, which no database is called, so no reader of a database's rows ever sees it
VERSION_ROW = "table_version"
#: why an ``adopt`` row was written (its ``detail``)
ADOPTED = "baseline: applied before orch recorded file hashes"
#: ``detail`` of a failed revision row when none of its statements had run: not dirty
NOTHING_APPLIED = "nothing applied"


@functools.lru_cache(maxsize=8)
def log_table(name: str, schema: str | None) -> Table:
    """The audit table's SQLAlchemy shape in *schema*.

    Cached (a few entries): a tenant's run builds it for the audit log, the
    table version and the recorded hashes, and building 17 columns each
    time cost more than the queries.  Nothing mutates the returned Table.
    """
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

    md = MetaData()
    return Table(
        name,
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(36), nullable=False),
        Column("db", String(64), nullable=False),
        Column("env", String(64), nullable=False),
        Column("revision", String(255), nullable=True),
        Column("direction", String(16), nullable=False),
        Column("started_at", DateTime(), nullable=False),
        Column("finished_at", DateTime(), nullable=True),
        Column("duration_ms", Integer, nullable=True),
        Column("outcome", String(16), nullable=False),
        Column("os_user", String(128), nullable=False),
        Column("host", String(255), nullable=False),
        Column("orch_version", String(32), nullable=False),
        Column("error", Text, nullable=True),
        Column("detail", Text, nullable=True),
        Column("git_commit", String(40), nullable=True),
        Column("sha256", String(64), nullable=True),  # version 2
        Column("scope", Text, nullable=True),  # version 3: what the run selected
        schema=schema,
    )


class TableTooNew(OrchError):
    """The audit table was upgraded by a newer orch: this one must not write to it.

    Reading stays possible (its rows keep every column this orch knows);
    writing could drop what the newer shape relies on.
    """

    exit_code = EXIT_USAGE


def table_version(conn: Connection, table_name: str, schema: str | None) -> int:
    """The shape version of the audit table (0: no table yet; 1: one without a version row).

    The version rows are read first; the catalog is asked whether the table
    exists only when that fails (a first run), so a run over a fleet pays
    one query per tenant here, not two.  The failure path rolls the
    connection back (a failed statement aborts a PostgreSQL transaction):
    call it with no work of the caller's in flight.
    """
    from sqlalchemy import inspect, select

    t = log_table(table_name, schema)
    try:
        found = (
            conn.execute(select(t.c.detail).where(t.c.db == "", t.c.direction == VERSION_ROW))
            .scalars()
            .all()
        )
    except Exception as exc:
        try:
            conn.rollback()
            exists = inspect(conn).has_table(table_name, schema=schema)
        except Exception:
            raise exc from None  # the connection is gone: report the first failure
        if exists:
            raise
        conn.rollback()
        return 0
    versions = [int(v) for v in found if v and str(v).isdigit()]
    return max(versions, default=1)


def too_new_message(found: int, table_name: str) -> str:
    return (
        f"orch's audit table {table_name} is at version {found}, written by a newer orch; "
        f"this orch ({__version__}) knows table version {TABLE_VERSION} at most and does not "
        "write to it: upgrade orch (status and log still read it); nothing was changed"
    )


def upgrade_table(conn: Connection, table_name: str, schema: str | None, found: int) -> None:
    """Bring an audit table of version *found* to :data:`TABLE_VERSION`, keeping every row.

    Call under the migration lock with no transaction open; commits.  On
    PostgreSQL and SQLite the steps run in one transaction (all or nothing).
    MySQL/MariaDB commit each DDL statement implicitly, so there every step
    is idempotent (a column is added only if missing, the version row is
    written last): a run that dies half-way leaves the table at its old
    version with some steps done, and the next run finishes them.
    """
    from sqlalchemy import inspect, text

    t = log_table(table_name, schema)
    name = conn.dialect.identifier_preparer.format_table(t)
    if found < 3:
        columns = {c["name"] for c in inspect(conn).get_columns(table_name, schema=schema)}
        if "sha256" not in columns:
            conn.execute(text(f"ALTER TABLE {name} ADD COLUMN sha256 VARCHAR(64) NULL"))
        if "scope" not in columns:
            kind = conn.dialect.type_compiler_instance.process(t.c.scope.type)
            conn.execute(text(f"ALTER TABLE {name} ADD COLUMN scope {kind} NULL"))
    conn.execute(t.delete().where(t.c.db == "", t.c.direction == VERSION_ROW))
    at = now()
    conn.execute(
        t.insert().values(
            run_id="",
            db="",
            env="",
            revision=None,
            direction=VERSION_ROW,
            started_at=at,
            finished_at=at,
            outcome="ok",
            os_user=os_user(),
            host=socket.gethostname(),
            orch_version=__version__,
            detail=str(TABLE_VERSION),
        )
    )
    conn.commit()


def now() -> dt.datetime:
    """Naive UTC: portable across the three backends' DateTime columns."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class LogRow:
    id: int
    run_id: str
    db: str
    env: str
    revision: str | None
    direction: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    outcome: str
    os_user: str
    host: str
    orch_version: str
    error: str | None
    detail: str | None
    git_commit: str | None = None
    sha256: str | None = None  # the revision file's hash (upgrade, adopt, accept rows)
    scope: str | None = None  # what the run selected (compact JSON), None before version 3
    interrupted: bool = False  # a ``running`` row whose run no longer holds the lock

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.db,
            "environment": self.env,
            "run_id": self.run_id,
            "id": self.id,
            "revision": self.revision,
            "direction": self.direction,
            "outcome": self.outcome,
            "interrupted": self.interrupted,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "os_user": self.os_user,
            "host": self.host,
            "orch_version": self.orch_version,
            "git_commit": self.git_commit,
            "sha256": self.sha256,
            "error": self.error,
            "detail": self.detail,
        }


def _iso(value: dt.datetime | None) -> str | None:
    """Stored naive UTC -> ISO 8601 with ``Z`` (seconds; SQLite keeps microseconds)."""
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat() + "Z"


@functools.lru_cache(maxsize=8)
def _row_statements(table: Table) -> tuple[Any, Any]:
    """The INSERT of a ``running`` row and the UPDATE that finishes it, for *table*.

    Built once per table (:func:`log_table` caches those): a statement made
    per row costs about 0.35 ms more CPU (construction and cache key) than
    executing a prebuilt one with parameters, twice per revision, and a
    fleet's worker makes an AuditLog per tenant.
    """
    from sqlalchemy import bindparam

    insert = table.insert()
    finish = (
        table.update()
        .where(table.c.id == bindparam("row_id_"))
        .values(
            outcome=bindparam("outcome_"),
            finished_at=bindparam("finished_"),
            duration_ms=bindparam("duration_"),
        )
    )
    return insert, finish


@functools.lru_cache(maxsize=8)
def _quick_insert(table: Table, quick: str, columns: tuple[str, ...]) -> Any:
    """``INSERT INTO table (columns) SELECT :columns FROM (SELECT quick) RETURNING id``.

    The row of :meth:`AuditLog.start_committed`, with *quick* (a backend's
    :attr:`~orch.backends.base.Backend.marker_commit_select`) evaluated in
    the same statement; typed parameters, compiled once per table.
    """
    from sqlalchemy import bindparam, literal_column, select

    source = select(literal_column(quick).label("quick")).subquery("quick")
    row = select(*[bindparam(c, type_=table.c[c].type) for c in columns]).select_from(source)
    return table.insert().from_select(list(columns), row).returning(table.c.id)


class AuditLog:
    """Writes step rows for one database on its migration connection.

    Never commits by itself: the caller decides which transaction a row
    belongs to (see the module docstring).
    """

    def __init__(
        self,
        conn: Connection,
        table_name: str,
        schema: str | None,
        run_id: str,
        db: str,
        env: str,
        git_commit: str | None = None,
        scope: str | None = None,
    ) -> None:
        self.conn = conn
        self.table = log_table(table_name, schema)
        self.run_id = run_id
        self.db = db
        self.env = env
        self.git_commit = git_commit
        self.scope = scope
        self._host = socket.gethostname()
        self._user = os_user()
        self._started: dict[int, dt.datetime] = {}
        self._insert, self._finish = _row_statements(self.table)
        self._chain: Any = None  # PostgreSQL's finish-and-start, built on first use
        self._backend_of: Any = None  # see _backend

    def ensure(self) -> bool:
        """Create the table, or upgrade an older one; call under the migration lock.

        Commits; True when it created the table (it is empty: nothing to read
        back from it).  Raises :class:`TableTooNew` (nothing written) when a
        newer orch has upgraded the table beyond :data:`TABLE_VERSION`.

        Two orch databases may share one server database (different version
        tables, so different locks) and race to create or upgrade the shared
        table: the loser sees an error, rolls back and finds the work done.
        """
        name, schema = self.table.name, self.table.schema
        found = table_version(self.conn, name, schema)
        self.conn.commit()
        if found == TABLE_VERSION:
            return False
        if found > TABLE_VERSION:
            raise TableTooNew(too_new_message(found, name))
        try:
            if found == 0:
                # the catalog said a moment ago there is none: no second look (a creator
                # racing this one makes it fail, handled below); made at this orch's shape,
                # only its version row is missing (no column to look for)
                self.table.create(self.conn, checkfirst=False)
                upgrade_table(self.conn, name, schema, TABLE_VERSION)
                return True
            upgrade_table(self.conn, name, schema, found)
        except Exception:
            self.conn.rollback()
            again = table_version(self.conn, name, schema)
            self.conn.rollback()
            if again == TABLE_VERSION:
                return False  # the other database sharing the table did it
            if again == 0:
                raise
            # MySQL/MariaDB: the other half-way through (its DDL committed); the steps are
            # idempotent, so finish them
            upgrade_table(self.conn, name, schema, again)
        return False

    def start(
        self,
        revision: str | None,
        direction: str,
        detail: str | None = None,
        sha256: str | None = None,
    ) -> int:
        """Insert a ``running`` row; returns its id for :meth:`finish`."""
        return self._add_row(revision, direction, detail, sha256, quick=None)

    def start_committed(
        self,
        revision: str | None,
        direction: str,
        detail: str | None = None,
        sha256: str | None = None,
    ) -> int:
        """:meth:`start`, committed at once: a run's first ``running`` row.

        Call with no transaction open.  Where the backend has a
        :attr:`~orch.backends.base.Backend.marker_commit_select`
        (PostgreSQL), the row is one statement that commits by itself
        without waiting for its flush (the revision's own commit flushes
        it): one round trip instead of four (BEGIN, SET, INSERT, COMMIT)
        and two fewer statements for the driver, per tenant of a fleet.
        """
        quick = self._backend().marker_commit_select
        row_id = self._add_row(revision, direction, detail, sha256, quick=quick)
        self.conn.commit()  # none open after a one-statement row; else the INSERT's
        return row_id

    def _add_row(
        self,
        revision: str | None,
        direction: str,
        detail: str | None,
        sha256: str | None,
        *,
        quick: str | None,
    ) -> int:
        """Insert a ``running`` row: the prebuilt INSERT, or with *quick*, the
        one-statement row of :meth:`start_committed`; its id."""
        started = now()
        values = self._row_values(revision, direction, started, detail, sha256)
        if quick is None:
            pk = self.conn.execute(self._insert, values).inserted_primary_key
            row_id = int(pk[0]) if pk is not None else 0
        else:
            statement = _quick_insert(self.table, quick, tuple(values))
            with self._backend().single_statements(self.conn):
                row_id = int(self.conn.execute(statement, values).scalar_one())
        self._started[row_id] = started
        return row_id

    def _backend(self) -> Any:
        """The backend of the connection (looked up on first use)."""
        if self._backend_of is None:
            self._backend_of = for_url(str(self.conn.engine.url))
        return self._backend_of

    def _row_values(
        self,
        revision: str | None,
        direction: str,
        started: dt.datetime,
        detail: str | None,
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """The columns of a new ``running`` row."""
        return {
            "run_id": self.run_id,
            "db": self.db,
            "env": self.env,
            "revision": revision,
            "direction": direction,
            "started_at": started,
            "outcome": "running",
            "os_user": self._user,
            "host": self._host,
            "orch_version": __version__,
            "detail": redact(detail)[:8000] if detail else None,
            "git_commit": self.git_commit,
            "sha256": sha256,
            "scope": self.scope,
        }

    def finish(
        self, row_id: int, outcome: str, error: str | None = None, detail: str | None = None
    ) -> None:
        """Set the outcome, end time and duration of a row from :meth:`start`."""
        end = now()
        started = self._started.get(row_id)
        duration = int((end - started).total_seconds() * 1000) if started is not None else None
        if error is None and detail is None and duration is not None:
            self.conn.execute(
                self._finish,
                {"row_id_": row_id, "outcome_": outcome, "finished_": end, "duration_": duration},
            )
            return
        values: dict[str, Any] = {"outcome": outcome, "finished_at": end}
        if duration is not None:
            values["duration_ms"] = duration
        if error is not None:
            values["error"] = redact(error)[:4000]
        if detail is not None:
            values["detail"] = redact(detail)[:8000]
        self.conn.execute(self.table.update().where(self.table.c.id == row_id).values(**values))

    def finish_and_start(
        self,
        row_id: int,
        revision: str,
        direction: str,
        detail: str | None = None,
        sha256: str | None = None,
    ) -> int:
        """``finish(row_id, "ok")`` then ``start(revision, ...)``; one statement on PostgreSQL.

        Between two revisions of a run orch closes one row and opens the next
        in the same transaction.  PostgreSQL takes both as one statement (a
        data-modifying WITH), which saves a round trip and a statement per
        revision; other backends run the two.
        """
        started = self._started.get(row_id)
        if started is None or not self._backend().chained_audit_rows:
            self.finish(row_id, "ok")
            return self.start(revision, direction, detail, sha256)
        if self._chain is None:
            self._chain = self._chain_statement()
        at = now()
        values = self._row_values(revision, direction, at, detail, sha256)
        values.update(
            row_id_=row_id,
            outcome_="ok",
            finished_=at,
            duration_=int((at - started).total_seconds() * 1000),
        )
        new_id = int(self.conn.execute(self._chain, values).scalar_one())
        self._started[new_id] = at
        return new_id

    def _chain_statement(self) -> Any:
        from sqlalchemy import text

        name = self.conn.dialect.identifier_preparer.format_table(self.table)
        columns = list(self._row_values(None, "", now(), None))
        return text(
            f"WITH finished AS (UPDATE {name} SET outcome = :outcome_, finished_at = :finished_, "
            f"duration_ms = :duration_ WHERE id = :row_id_) "
            f"INSERT INTO {name} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)}) RETURNING id"
        )

    def discard(self, row_id: int) -> None:
        """Delete a ``running`` row written ahead for a revision that never started."""
        self._started.pop(row_id, None)
        self.conn.execute(self.table.delete().where(self.table.c.id == row_id))

    def record(
        self,
        revision: str | None,
        direction: str,
        outcome: str,
        error: str | None = None,
        detail: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """A finished row in one go (failures outside a revision, hooks, stamps, accepts)."""
        row = self.start(revision, direction, detail, sha256)
        self.finish(row, outcome, error)

    def adopt(self, hashes: dict[str, str]) -> None:
        """``adopt`` rows: *hashes* (revision -> its file's sha256 now) as the baseline.

        For revisions applied here with no hash recorded (plain Alembic, an
        older orch, a stamp): from now on an edit of their file shows.
        """
        if not hashes:
            return
        at = now()
        rows = []
        for rev, digest in hashes.items():
            values = self._row_values(rev, "adopt", at, ADOPTED, digest)
            values.update(outcome="ok", finished_at=at, duration_ms=0)
            rows.append(values)
        self.conn.execute(self._insert, rows)

    def close_interrupted(
        self, transactional: bool, found: Sequence[tuple[int, str | None]] | None = None
    ) -> list[str]:
        """Turn this database's leftover ``running`` rows into ``failed``; call under the lock.

        Holding the lock proves the run that wrote them is gone (killed, or its
        connection died).  Returns the revisions concerned.  *found*: those
        rows' (id, revision), already read (:func:`read_run_state`).
        """
        from sqlalchemy import select

        t = self.table
        if found is None:
            found = [
                (r.id, r.revision)
                for r in self.conn.execute(
                    select(t.c.id, t.c.revision).where(t.c.db == self.db, t.c.outcome == "running")
                )
            ]
        rows = list(found)
        if not rows:
            return []
        what = (
            "rolled back"
            if transactional
            else "may be half-applied: this backend cannot roll DDL back"
        )
        self.conn.execute(
            t.update()
            .where(t.c.id.in_([i for i, _ in rows]))
            .values(
                outcome="failed", error=f"interrupted: the run stopped during this step; {what}"
            )
        )
        return [rev or "?" for _, rev in rows]


@dataclass(frozen=True)
class RunState:
    """What a run reads first under its lock (see :func:`read_run_state`)."""

    current: tuple[str, ...]  # the version rows, sorted
    running: tuple[tuple[int, str | None], ...]  # (id, revision) of rows left ``running``
    recorded: dict[str, str]  # as :func:`recorded_hashes`


def read_run_state(conn: Connection, table_name: str, db: DatabaseSpec) -> RunState | None:
    """The audit table's version, rows left ``running``, version rows and recorded hashes
    of *db* (its audit table in its ``version_table_schema``): one statement instead of four.

    A tenant's run read these one query each, four round trips (and four
    compiled statements) before its first revision; a fleet of 1,000 paid
    them 1,000 times.  None (the connection rolled back) when the statement
    fails or the audit table is not this orch's current shape: a first run
    (no tables yet), an older table to upgrade, a newer one to refuse.  The
    caller then reads piece by piece (:meth:`AuditLog.ensure`,
    :meth:`AuditLog.close_interrupted`, :func:`orch.store.db.read_current_readonly`,
    :func:`recorded_hashes`), which say what is wrong.  Call with no work of
    the caller's in flight.
    """
    from sqlalchemy import text

    log = conn.dialect.identifier_preparer.format_table(
        log_table(table_name, db.version_table_schema)
    )
    vt = version_table_sql(conn, db)
    kept = ", ".join(f"'{d}'" for d in HASH_DIRECTIONS)  # constants of this module
    sql = (
        f"SELECT 0 AS k, NULL AS id, detail AS a, NULL AS b FROM {log} "
        f"WHERE db = '' AND direction = '{VERSION_ROW}' "
        f"UNION ALL SELECT 1, id, revision, NULL FROM {log} "
        "WHERE db = :db AND outcome = 'running' "
        f"UNION ALL SELECT 2, NULL, version_num, NULL FROM {vt} "
        f"UNION ALL SELECT 3, id, revision, sha256 FROM {log} "
        f"WHERE db = :db AND sha256 IS NOT NULL AND outcome = 'ok' AND direction IN ({kept})"
    )
    try:
        rows = conn.execute(text(sql), {"db": db.name}).all()
    except Exception:
        conn.rollback()
        return None
    versions = [int(a) for k, _, a, _ in rows if k == 0 and a and str(a).isdigit()]
    if max(versions, default=1) != TABLE_VERSION:
        conn.rollback()
        return None
    running = tuple((int(i), r) for k, i, r, _ in rows if k == 1)
    current = tuple(sorted(str(a) for k, _, a, _ in rows if k == 2))
    hashes = sorted((int(i), str(r), str(h)) for k, i, r, h in rows if k == 3 and r)
    return RunState(current, running, {r: h for _, r, h in hashes})


def read_log(
    conn: Connection, table_name: str, schema: str | None, db: str | None, limit: int | None
) -> list[LogRow]:
    """Rows for *db* (all if None), newest first; [] when the table does not exist."""
    from sqlalchemy import inspect, select

    if not inspect(conn).has_table(table_name, schema=schema):
        return []
    t = log_table(table_name, schema)
    present = {c["name"] for c in inspect(conn).get_columns(table_name, schema=schema)}
    # an older table has fewer columns, a newer one may have more: read what both know
    q = select(*[c for c in t.c if c.name in present]).order_by(t.c.id.desc())
    if db is not None:
        q = q.where(t.c.db == db)
    if limit:
        q = q.limit(limit)
    return [LogRow(**dict(r._mapping)) for r in conn.execute(q)]


def recorded_hashes(
    conn: Connection, table_name: str, schema: str | None, db: str
) -> dict[str, str]:
    """Per revision, the sha256 its file had when it last ran here, was adopted or accepted.

    Read-only; ``{}`` when there is no table or it has no ``sha256`` column
    yet (a version 1 table: nothing known, so nothing is edited).  Only
    meaningful for revisions applied now; the caller intersects.

    The SELECT is tried first; only when it fails is the catalog asked
    whether the table and its column exist, so the usual case costs one
    query instead of a catalog walk (on PostgreSQL ``get_columns`` alone is
    several queries: a tenant fleet paid them for every tenant).  A failed
    statement aborts a PostgreSQL transaction, so that path rolls the
    connection back: call this with no work of the caller's in flight.
    """
    from sqlalchemy import inspect, select

    t = log_table(table_name, schema)
    query = (
        select(t.c.revision, t.c.sha256)
        .where(
            t.c.db == db,
            t.c.sha256.is_not(None),
            t.c.outcome == "ok",
            t.c.direction.in_(HASH_DIRECTIONS),
        )
        .order_by(t.c.id)
    )
    try:
        rows = conn.execute(query).all()
    except Exception as exc:
        try:
            conn.rollback()
            insp = inspect(conn)
            known = insp.has_table(table_name, schema=schema) and "sha256" in {
                c["name"] for c in insp.get_columns(table_name, schema=schema)
            }
        except Exception:
            raise exc from None  # the connection is gone: report the first failure
        if known:
            raise
        conn.rollback()
        return {}
    return {str(r.revision): str(r.sha256) for r in rows if r.revision}


def recorded_hashes_sqlite(
    path: Path, table_name: str, db: str, timeout: float = 5.0
) -> dict[str, str]:
    """:func:`recorded_hashes` of a SQLite file with the stdlib driver alone (``status``).

    Never creates the file; ``{}`` when it, the table or the column is missing.
    """
    import sqlite3
    from urllib.parse import quote

    if not path.exists():
        return {}
    uri = f"file:{quote(str(path), safe='/')}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=timeout or 5.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseError(describe_error(exc)) from exc
    try:
        quoted = '"' + table_name.replace('"', '""') + '"'
        marks = ", ".join("?" for _ in HASH_DIRECTIONS)
        try:
            rows = con.execute(
                f"SELECT revision, sha256 FROM {quoted} WHERE db = ? AND sha256 IS NOT NULL "
                f"AND outcome = 'ok' AND direction IN ({marks}) ORDER BY id",
                (db, *HASH_DIRECTIONS),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if str(exc).startswith(("no such table", "no such column")):
                return {}
            raise
        return {str(r[0]): str(r[1]) for r in rows if r[0]}
    finally:
        con.close()


@dataclass
class LogView:
    """``orch log``: rows of several databases merged newest first, and what could not be read."""

    rows: list[LogRow]
    unreadable: dict[str, str]


def collect_log(
    registry: Registry, env: str | None, names: Sequence[str], limit: int | None
) -> LogView:
    """Read the audit trail of *names* in environment *env*, concurrently and read-only.

    Never creates the table or a SQLite file.  A ``running`` row whose
    database's lock is free is marked ``interrupted`` (its run was killed;
    the next write run records it as failed).
    """
    import concurrent.futures

    from orch.store.db import NoDatabase, connect, describe_error

    targets = {t.name: t for t in registry.targets(env)}

    def one(name: str) -> tuple[str, list[LogRow] | None, str | None]:
        t = targets[name]
        assert t.url is not None
        try:
            conn = connect(t.url, registry.settings.connect_timeout, readonly=True)
        except NoDatabase:
            return name, [], None
        except Exception as exc:
            return name, None, describe_error(exc)
        try:
            rows = read_log(
                conn, registry.settings.log_table, t.db.version_table_schema, name, limit
            )
            if any(r.outcome == "running" for r in rows) and not is_locked(conn, t.db, t.url):
                for r in rows:
                    r.interrupted = r.outcome == "running"
            conn.rollback()
            return name, rows, None
        except Exception as exc:
            return name, None, describe_error(exc)
        finally:
            conn.close()

    merged: list[LogRow] = []
    unreadable: dict[str, str] = {}
    workers = max(1, min(16, len(names)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for name, rows, error in pool.map(one, names):
            if rows is None:
                unreadable[name] = error or "unreadable"
            else:
                merged.extend(rows)
    merged.sort(key=lambda r: (r.started_at, r.id), reverse=True)
    return LogView(merged[:limit] if limit else merged, unreadable)


def dirty_revision(
    conn: Connection, table_name: str, schema: str | None, db: str
) -> tuple[str, str | None] | None:
    """(revision, error) if *db*'s last revision step did not finish cleanly, else None.

    Only meaningful on backends without transactional DDL; the caller decides.
    The last row that counts is the latest upgrade/downgrade of a revision or
    the latest successful ``stamp`` (the operator's "repaired" signal).  A
    failure outside any revision (connection lost before the first step) has
    no revision and changed no schema, so it does not count; nor does a
    revision that failed before any of its statements ran (detail
    :data:`NOTHING_APPLIED`).  A ``running`` row counts too: the caller tells
    a live run (lock held) apart.
    """
    from sqlalchemy import and_, func, inspect, not_, or_, select

    if not inspect(conn).has_table(table_name, schema=schema):
        return None
    t = log_table(table_name, schema)
    row = conn.execute(
        select(t.c.revision, t.c.outcome, t.c.error)
        .where(
            t.c.db == db,
            or_(
                and_(
                    t.c.direction.in_(("upgrade", "downgrade")),
                    t.c.revision.is_not(None),
                    not_(
                        and_(
                            t.c.outcome == "failed",
                            func.coalesce(t.c.detail, "").like(NOTHING_APPLIED + "%"),
                        )
                    ),
                ),
                and_(t.c.direction == "stamp", t.c.outcome == "ok"),
            ),
        )
        .order_by(t.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row.outcome == "ok":
        return None
    return (row.revision or "?", row.error)


def repair_hint(name: str, rev: str) -> str:
    """How an operator gets a dirty database going again (one sentence)."""
    return (
        f"repair the schema by hand (finish or undo {rev}), then "
        f"'orch stamp {name}@<revision it is really at>'"
    )


def git_commit(start: Path) -> str | None:
    """The commit checked out at *start* or above (None outside git); no subprocess.

    Reads ``.git/HEAD`` and the ref it names (loose or packed), following a
    worktree's ``.git`` file and ``commondir``.  Cheap enough for every run.
    """
    try:
        here = start.resolve()
        for d in (here, *here.parents):
            dotgit = d / ".git"
            if dotgit.is_dir():
                gitdir = dotgit
            elif dotgit.is_file():
                line = dotgit.read_text().strip()
                if not line.startswith("gitdir:"):
                    return None
                gitdir = (d / line.split(":", 1)[1].strip()).resolve()
            else:
                continue
            head = (gitdir / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head[:40] or None
            ref = head.split(":", 1)[1].strip()
            common = gitdir
            if (gitdir / "commondir").is_file():
                common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
            for base in (gitdir, common):
                loose = base / ref
                if loose.is_file():
                    return loose.read_text().strip()[:40] or None
            packed = common / "packed-refs"
            if packed.is_file():
                for ln in packed.read_text().splitlines():
                    parts = ln.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0][:40]
            return None
    except OSError:
        return None
    return None
