"""orch's bookkeeping table in each database: the audit trail and the dirty marker.

One row per step (a revision applied or undone, a stamp, a hook).  On
MySQL/MariaDB, where DDL cannot roll back, the row of a revision is committed
as ``running`` *before* its first statement, so a crash or failure half-way
leaves evidence: the database is ``dirty`` until an operator repairs it and
stamps.  On PostgreSQL and SQLite the row is written inside the revision's
own transaction, so a killed run leaves nothing behind and is not dirty.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orch import __version__
from orch.db import os_user
from orch.redact import redact

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

MIGRATION_DIRECTIONS = ("upgrade", "downgrade", "stamp")


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
        Column("revision", String(64), nullable=True),
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

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["started_at"] = self.started_at.isoformat() + "Z"
        out["finished_at"] = self.finished_at.isoformat() + "Z" if self.finished_at else None
        return out


class AuditLog:
    """Writes step rows for one database on its migration connection."""

    def __init__(
        self, conn: Connection, table_name: str, schema: str | None, run_id: str, db: str, env: str
    ) -> None:
        self.conn = conn
        self.table = log_table(table_name, schema)
        self.run_id = run_id
        self.db = db
        self.env = env
        self._host = socket.gethostname()
        self._user = os_user()

    def ensure(self) -> None:
        """Create the table if needed; call under the migration lock, then commit."""
        self.table.create(self.conn, checkfirst=True)

    def start(self, revision: str | None, direction: str, detail: str | None = None) -> int:
        values = {
            "run_id": self.run_id,
            "db": self.db,
            "env": self.env,
            "revision": revision,
            "direction": direction,
            "started_at": now(),
            "outcome": "running",
            "os_user": self._user,
            "host": self._host,
            "orch_version": __version__,
            "detail": redact(detail) if detail else None,
        }
        result = self.conn.execute(self.table.insert().values(**values))
        pk = result.inserted_primary_key
        return int(pk[0]) if pk is not None else 0

    def finish(
        self, row_id: int, outcome: str, error: str | None = None, detail: str | None = None
    ) -> None:
        from sqlalchemy import select

        started = self.conn.execute(
            select(self.table.c.started_at).where(self.table.c.id == row_id)
        ).scalar()
        end = now()
        values: dict[str, Any] = {"outcome": outcome, "finished_at": end}
        if started is not None:
            values["duration_ms"] = int((end - started).total_seconds() * 1000)
        if error is not None:
            values["error"] = redact(error)[:4000]
        if detail is not None:
            values["detail"] = redact(detail)[:8000]
        self.conn.execute(self.table.update().where(self.table.c.id == row_id).values(**values))

    def record(
        self,
        revision: str | None,
        direction: str,
        outcome: str,
        error: str | None = None,
        detail: str | None = None,
    ) -> None:
        """A finished row in one go (failures after rollback, hooks, stamps)."""
        row = self.start(revision, direction, detail)
        self.finish(row, outcome, error)


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


def dirty_revision(
    conn: Connection, table_name: str, schema: str | None, db: str
) -> tuple[str, str | None] | None:
    """(revision, error) if the last migration step of *db* did not finish cleanly.

    Only meaningful on backends without transactional DDL; the caller decides.
    A later ``stamp`` (an ``ok`` row) clears it.
    """
    from sqlalchemy import inspect, select

    if not inspect(conn).has_table(table_name, schema=schema):
        return None
    t = log_table(table_name, schema)
    row = conn.execute(
        select(t.c.revision, t.c.outcome, t.c.error)
        .where(t.c.db == db, t.c.direction.in_(MIGRATION_DIRECTIONS))
        .order_by(t.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row.outcome == "ok":
        return None
    return (row.revision or "?", row.error)
