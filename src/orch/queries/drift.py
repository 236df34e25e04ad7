"""``orch check``: drift between each database's models and its live schema.

Uses ``alembic.autogenerate.compare_metadata`` on a ``MigrationContext``
built on a read-only connection, not ``alembic.command.check``: the latter
runs env.py's ``run_migrations``, which creates the version table on a
fresh database (and on MySQL that DDL commits at once).  The comparison
options are the ones orch's env.py uses for autogenerate
(:meth:`orch.alembic_bridge.job.Job.configure_kwargs`: type comparison, SQLite
batch mode, orch's own tables and ``exclude_tables`` left out), so ``check``
reports exactly what ``revision --autogenerate`` would write.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orch.alembic_bridge import job as job_mod
from orch.alembic_bridge.autogen import describe, flatten, inspection_connection, model_differences
from orch.config.registry import Registry, Target
from orch.config.revisions import load_graph
from orch.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DatabaseError, OrchError
from orch.outcomes import CheckState
from orch.store.db import describe_error, read_current

__all__ = ["DriftResult", "check", "compare", "describe", "exit_code", "flatten"]


@dataclass
class DriftResult:
    """One database's comparison."""

    name: str
    state: CheckState
    differences: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    current: list[str] | None = None
    heads: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.current is not None and set(self.current) != set(self.heads)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "differences": self.differences,
            "current": self.current,
            "heads": self.heads,
            "error": self.error,
        }


def compare(registry: Registry, target: Target) -> DriftResult:
    """Compare one database; never writes.  Database errors become the result's state."""

    db = target.db
    heads = list(load_graph(db.versions, db.name).heads)
    if not db.metadata:
        return DriftResult(
            db.name,
            CheckState.NOT_CHECKABLE,
            heads=heads,
            error=f"no 'metadata' in the registry (databases.{db.name}.metadata: module:attribute)",
        )
    if target.url is None:
        return DriftResult(db.name, CheckState.UNCONFIGURED, heads=heads, error=target.missing)
    job_mod.load_metadata(registry, db)  # a model that cannot be imported: exit 2, here
    phase = "connect"
    try:
        with inspection_connection(registry, target) as conn:
            current = list(read_current(conn, db))
            conn.rollback()
            phase = "compare"
            described = model_differences(registry, db, target.url, conn)
    except DatabaseError as exc:
        return DriftResult(db.name, CheckState.UNREACHABLE, heads=heads, error=str(exc))
    except OrchError:
        raise
    except Exception as exc:
        if phase == "connect":
            return DriftResult(
                db.name, CheckState.UNREACHABLE, heads=heads, error=describe_error(exc)
            )
        # reached the database, but the comparison itself broke (a model, a type, rights)
        return DriftResult(
            db.name,
            CheckState.FAILED,
            heads=heads,
            error=f"comparison failed: {describe_error(exc)}",
        )
    state = CheckState.DRIFT if described else CheckState.CLEAN
    return DriftResult(db.name, state, described, current=current, heads=heads)


def check(
    registry: Registry, env: str | None, names: Sequence[str] | None = None
) -> list[DriftResult]:
    """Compare every (or each named) database of *env*, concurrently, in registry order."""
    targets = [t for t in registry.targets(env) if not names or t.name in names]
    if any(t.db.metadata for t in targets):
        # import models once, before threads race on the import machinery
        from orch.alembic_bridge import job as job_mod

        for t in targets:
            if t.db.metadata:
                job_mod.load_metadata(registry, t.db)
    if len(targets) <= 1:
        return [compare(registry, t) for t in targets]
    with concurrent.futures.ThreadPoolExecutor(min(8, len(targets))) as pool:
        return list(pool.map(lambda t: compare(registry, t), targets))


def exit_code(results: Sequence[DriftResult], named: Sequence[str] = ()) -> int:
    """1 on drift, an unreachable database or a failed comparison; else 2 when a
    database has no usable URL or one named on the command line has no metadata; else 0.

    Databases without ``metadata`` that were not named are listed, not failed: a
    registry may well hold databases nobody writes models for.
    """

    if any(r.state in ("drift", "unreachable", "failed") for r in results):
        return EXIT_FAILED
    if any(r.state == "unconfigured" for r in results):
        return EXIT_USAGE
    if any(r.name in named and r.state == "not_checkable" for r in results):
        return EXIT_USAGE
    return EXIT_OK
