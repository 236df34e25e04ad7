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
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch import __version__
from orch.backends import for_url
from orch.redact import redact
from orch.store.db import os_user

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from orch.config.registry import Registry

MIGRATION_DIRECTIONS = ("upgrade", "downgrade", "stamp")
#: ``detail`` of a failed revision row when none of its statements had run: not dirty
NOTHING_APPLIED = "nothing applied"


def log_table(name: str, schema: str | None) -> Table:
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
        schema=schema,
    )


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
            "error": self.error,
            "detail": self.detail,
        }


def _iso(value: dt.datetime | None) -> str | None:
    """Stored naive UTC -> ISO 8601 with ``Z`` (seconds; SQLite keeps microseconds)."""
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat() + "Z"


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
    ) -> None:
        self.conn = conn
        self.table = log_table(table_name, schema)
        self.run_id = run_id
        self.db = db
        self.env = env
        self.git_commit = git_commit
        self._host = socket.gethostname()
        self._user = os_user()
        self._started: dict[int, dt.datetime] = {}
        # built once: a statement made per row costs about 0.35 ms more CPU
        # (construction and cache key) than executing a prebuilt one with
        # parameters, twice per revision
        from sqlalchemy import bindparam

        t = self.table
        self._insert = t.insert()
        self._chain: Any = None  # PostgreSQL's finish-and-start, built on first use
        self._chains = for_url(str(conn.engine.url)).chained_audit_rows
        self._finish = (
            t.update()
            .where(t.c.id == bindparam("row_id_"))
            .values(
                outcome=bindparam("outcome_"),
                finished_at=bindparam("finished_"),
                duration_ms=bindparam("duration_"),
            )
        )

    def ensure(self) -> None:
        """Create the table if needed; call under the migration lock, then commit.

        Two orch databases may share one server database (different version
        tables, so different locks) and race to create the shared table: the
        loser sees an error, rolls back and finds the table there.
        """
        from sqlalchemy import inspect

        try:
            self.table.create(self.conn, checkfirst=True)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            if not inspect(self.conn).has_table(self.table.name, schema=self.table.schema):
                raise
            self.conn.rollback()

    def start(self, revision: str | None, direction: str, detail: str | None = None) -> int:
        """Insert a ``running`` row; returns its id for :meth:`finish`."""
        started = now()
        values = self._row_values(revision, direction, started, detail)
        result = self.conn.execute(self._insert, values)
        pk = result.inserted_primary_key
        row_id = int(pk[0]) if pk is not None else 0
        self._started[row_id] = started
        return row_id

    def _row_values(
        self, revision: str | None, direction: str, started: dt.datetime, detail: str | None
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
        self, row_id: int, revision: str, direction: str, detail: str | None = None
    ) -> int:
        """``finish(row_id, "ok")`` then ``start(revision, ...)``; one statement on PostgreSQL.

        Between two revisions of a run orch closes one row and opens the next
        in the same transaction.  PostgreSQL takes both as one statement (a
        data-modifying WITH), which saves a round trip and a statement per
        revision; other backends run the two.
        """
        started = self._started.get(row_id)
        if started is None or not self._chains:
            self.finish(row_id, "ok")
            return self.start(revision, direction, detail)
        if self._chain is None:
            self._chain = self._chain_statement()
        at = now()
        values = self._row_values(revision, direction, at, detail)
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
    ) -> None:
        """A finished row in one go (failures outside a revision, hooks, stamps)."""
        row = self.start(revision, direction, detail)
        self.finish(row, outcome, error)

    def close_interrupted(self, transactional: bool) -> list[str]:
        """Turn this database's leftover ``running`` rows into ``failed``; call under the lock.

        Holding the lock proves the run that wrote them is gone (killed, or its
        connection died).  Returns the revisions concerned.
        """
        from sqlalchemy import select

        t = self.table
        rows = self.conn.execute(
            select(t.c.id, t.c.revision).where(t.c.db == self.db, t.c.outcome == "running")
        ).all()
        if not rows:
            return []
        what = (
            "rolled back"
            if transactional
            else "may be half-applied: this backend cannot roll DDL back"
        )
        self.conn.execute(
            t.update()
            .where(t.c.id.in_([r.id for r in rows]))
            .values(
                outcome="failed", error=f"interrupted: the run stopped during this step; {what}"
            )
        )
        return [r.revision or "?" for r in rows]


def read_log(
    conn: Connection, table_name: str, schema: str | None, db: str | None, limit: int | None
) -> list[LogRow]:
    """Rows for *db* (all if None), newest first; [] when the table does not exist."""
    from sqlalchemy import inspect, select

    if not inspect(conn).has_table(table_name, schema=schema):
        return []
    t = log_table(table_name, schema)
    q = select(t).order_by(t.c.id.desc())
    if db is not None:
        q = q.where(t.c.db == db)
    if limit:
        q = q.limit(limit)
    return [LogRow(**dict(r._mapping)) for r in conn.execute(q)]


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
    from orch.store.locks import is_locked

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
