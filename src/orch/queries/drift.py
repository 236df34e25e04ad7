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
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from orch.config.registry import Registry, Target
from orch.errors import OrchError
from orch.outcomes import CheckState


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


def flatten(diffs: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """compare_metadata / as_diffs yield tuples, and lists of tuples for column changes."""
    for d in diffs:
        if isinstance(d, list):
            yield from flatten(d)
        else:
            yield tuple(d)


def _type(t: Any, dialect: Any = None) -> str:
    if t is None:
        return "?"
    try:
        return str(t.compile(dialect=dialect)) if dialect is not None else str(t)
    except Exception:
        return repr(t)


def _table_name(table: Any) -> str:
    schema = getattr(table, "schema", None)
    name = getattr(table, "name", str(table))
    return f"{schema}.{name}" if schema else str(name)


def _cols(obj: Any) -> str:
    try:
        return ", ".join(str(c.name) for c in obj.columns)
    except Exception:
        return "?"


def describe(diff: Any, dialect: Any = None) -> dict[str, Any]:
    """One difference as ``{"op", "table", "column"?, "name"?, "text"}`` (text for humans).

    The ``op`` names are Alembic's (``add_table``, ``remove_column``,
    ``modify_type``, ...); ``add`` means the models have it and the database
    does not.
    """
    items = list(flatten([diff]))
    if len(items) != 1:
        parts = [describe(i, dialect) for i in items]
        return {"op": "multiple", "parts": parts, "text": "; ".join(p["text"] for p in parts)}
    d = items[0]
    op = str(d[0])
    out: dict[str, Any] = {"op": op}
    try:
        if op in ("add_table", "remove_table"):
            table = d[1]
            out["table"] = _table_name(table)
            verb = (
                "table in the models, missing in the database"
                if op == "add_table"
                else ("table in the database, not in the models")
            )
            out["text"] = f"{op} {out['table']}: {verb}"
        elif op in ("add_column", "remove_column"):
            schema, tname, col = d[1], d[2], d[3]
            out["table"] = f"{schema}.{tname}" if schema else tname
            out["column"] = col.name
            where = (
                "in the models, missing in the database"
                if op == "add_column"
                else ("in the database, not in the models")
            )
            out["text"] = f"{op} {out['table']}.{col.name} {_type(col.type, dialect)}: {where}"
        elif op in ("add_index", "remove_index"):
            idx = d[1]
            out["table"] = _table_name(idx.table)
            out["name"] = idx.name
            unique = "unique " if getattr(idx, "unique", False) else ""
            out["text"] = f"{op} {idx.name} on {out['table']} ({unique}{_cols(idx)})"
        elif op in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
            con = d[1]
            out["table"] = _table_name(con.table)
            out["name"] = con.name
            kind = type(con).__name__
            detail = _cols(con)
            if op.endswith("_fk"):
                with contextlib.suppress(Exception):  # an unresolved ForeignKey
                    detail += " -> " + _table_name(con.referred_table)
            out["text"] = f"{op} {con.name or '(unnamed)'} on {out['table']}: {kind}({detail})"
        elif op.startswith("modify_"):
            schema, tname, cname, _info, old, new = d[1], d[2], d[3], d[4], d[5], d[6]
            out["table"] = f"{schema}.{tname}" if schema else tname
            out["column"] = cname
            if op == "modify_type":
                old_s, new_s = _type(old, dialect), _type(new, dialect)
            elif op == "modify_nullable":
                old_s = "NULL" if old else "NOT NULL"
                new_s = "NULL" if new else "NOT NULL"
            elif op == "modify_default":
                old_s = _default(old)
                new_s = _default(new)
            else:
                old_s, new_s = repr(old), repr(new)
            out["database"] = old_s
            out["models"] = new_s
            out["text"] = f"{op} {out['table']}.{cname}: database {old_s}, models {new_s}"
        elif op in ("add_table_comment", "remove_table_comment"):
            out["table"] = _table_name(d[1])
            out["text"] = f"{op} {out['table']}"
        else:
            out["text"] = " ".join(str(x) for x in d)
    except Exception:  # an Alembic diff shape this version does not know
        out["text"] = " ".join(repr(x) for x in d)
    return out


def _default(value: Any) -> str:
    if value is None:
        return "no default"
    arg = getattr(value, "arg", value)
    text = getattr(arg, "text", arg)
    return f"DEFAULT {text}"


def compare(registry: Registry, target: Target) -> DriftResult:
    """Compare one database; never writes.  Database errors become the result's state."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from orch.alembic_bridge import job as job_mod
    from orch.alembic_bridge.autogen import inspection_connection
    from orch.config.revisions import load_graph
    from orch.errors import DatabaseError
    from orch.store.db import describe_error, read_current

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
    metadata = job_mod.load_metadata(registry, db)
    assert metadata is not None
    job = job_mod.Job(registry, db, target.url)
    opts = job.configure_kwargs()
    opts.pop("target_metadata", None)
    opts.pop("transactional_ddl", None)
    opts.pop("transaction_per_migration", None)
    phase = "connect"
    try:
        with inspection_connection(registry, target) as conn:
            current = list(read_current(conn, db))
            conn.rollback()
            phase = "compare"
            ctx = MigrationContext.configure(connection=conn, opts=opts)
            diffs = compare_metadata(ctx, metadata)
            dialect = conn.dialect
            described = [describe(d, dialect) for d in flatten(diffs)]
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
    from orch.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

    if any(r.state in ("drift", "unreachable", "failed") for r in results):
        return EXIT_FAILED
    if any(r.state == "unconfigured" for r in results):
        return EXIT_USAGE
    if any(r.name in named and r.state == "not_checkable" for r in results):
        return EXIT_USAGE
    return EXIT_OK
