"""``orch test``: the migrations themselves tested, on throwaway databases.

For every database (in ``depends_on`` order) orch checks, on fresh databases
created beside the environment's own (same server and login, see
:meth:`orch.backends.base.Backend.create_database`; the environment's
databases are never touched):

``single_head``
    the history has one head (several: ``orch merge``);
``upgrade``
    base to head in one run works;
``models_match``
    at head, autogenerate finds no difference between the models and the
    schema the migrations built (only where ``metadata`` is set);
``stairway``
    each revision, in order, goes up, down and up again;
``no_trace``
    each revision's downgrade leaves the schema as it was before its
    upgrade: tables, columns (type, nullability), primary keys, indexes,
    unique and foreign keys, as the database reflects them.

Each check of each database ends ``passed``, ``failed`` (naming the
revision and, for ``no_trace``, the schema difference) or
``not_applicable`` (saying why).  The throwaway databases are dropped at the
end, also after a failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch.alembic_bridge import runner
from orch.alembic_bridge.autogen import model_differences
from orch.alembic_bridge.internals import step_revision
from orch.backends import for_url
from orch.config.registry import DatabaseSpec, Registry, Target
from orch.config.revisions import load_graph
from orch.errors import EXIT_FAILED, EXIT_OK, DatabaseError, OrchError, UsageError
from orch.outcomes import Verdict
from orch.planning.plan import levels
from orch.redact import redact_url
from orch.store.db import connect, describe_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

CHECKS = ("single_head", "upgrade", "stairway", "no_trace", "models_match")

Say = Callable[[str], None]


def _quiet(_text: str) -> None:
    return None


@dataclass
class CheckResult:
    """One check of one database."""

    check: str
    state: Verdict
    detail: str = ""
    revision: str | None = None
    differences: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "state": self.state,
            "revision": self.revision,
            "detail": self.detail,
            "differences": self.differences,
        }


@dataclass
class DatabaseChecks:
    """Every check of one database, in :data:`CHECKS` order."""

    name: str
    backend: str
    checks: list[CheckResult]

    @property
    def failed(self) -> bool:
        return any(c.state == Verdict.FAILED for c in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.check == name)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "state": Verdict.FAILED if self.failed else Verdict.PASSED,
            "checks": [c.as_json() for c in self.checks],
        }


def failures(results: Sequence[DatabaseChecks]) -> list[str]:
    """One line per failed check: ``core stairway: 4d2e0c7783c8: ...``."""
    out = []
    for r in results:
        for c in r.checks:
            if c.state == Verdict.FAILED:
                where = f"{c.revision}: " if c.revision else ""
                out.append(f"{r.name} {c.check}: {where}{c.detail}")
                out.extend(f"    {d['text']}" for d in c.differences)
    return out


# ---------------------------------------------------------------- selection


def selected_targets(
    registry: Registry, env: str | None, names: Sequence[str] | None = None
) -> list[Target]:
    """The targets to test, in dependency order; UsageError for unknown or URL-less ones.

    The environment's URL is needed even though its database is never used:
    it says which server (and login) the throwaway databases go to.
    """

    registry = registry.in_environment(env)
    for name in names or ():
        registry.database(name)
    chosen = list(dict.fromkeys(names or registry.databases))
    by_name = {t.name: t for t in registry.targets(env) if t.name in chosen}
    missing = [t for t in by_name.values() if t.url is None]
    if missing:
        raise UsageError(
            "; ".join(f"{t.name}: {t.missing}" for t in missing)
            + " (orch test creates its throwaway databases on the server of that URL)"
        )
    return [by_name[n] for level in levels(registry, chosen) for n in level]


# ---------------------------------------------------------------- throwaway databases

#: how throwaway databases are named: orch_test_<db>_<random>
PREFIX = "orch_test_"
#: the longest database name PostgreSQL (63) and MySQL (64) both take
_MAX_NAME = 63


def scratch_name(db: str) -> str:
    """``orch_test_<db>_<8 hex digits>``: recognisable, unique, short enough everywhere."""
    import re
    import secrets

    tail = secrets.token_hex(4)
    middle = re.sub(r"[^a-z0-9_]", "_", db.lower())[: _MAX_NAME - len(PREFIX) - len(tail) - 1]
    return f"{PREFIX}{middle}_{tail}"


class Terminated(KeyboardInterrupt):
    """SIGTERM while checking: raised like Ctrl-C's KeyboardInterrupt, so cleanup runs."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here, so ``finally`` drops the databases.

    Ctrl-C already does; a plain SIGTERM (a CI job cancelled) would end the
    process without running any ``finally``.  Only the main thread can set
    a handler; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Scratch:
    """The throwaway databases of one run: made on demand, every one dropped by :meth:`close`."""

    def __init__(self, registry: Registry, say: Say = _quiet) -> None:
        self.registry = registry
        self.say = say
        self._tmp = tempfile.TemporaryDirectory(prefix="orch_test_")
        self.directory = Path(self._tmp.name)
        self.urls: list[str] = []
        self.problems: list[str] = []

    def create(self, target: Target) -> str:

        assert target.url is not None
        name = scratch_name(target.name)
        timeout = self.registry.settings.connect_timeout
        try:
            url = for_url(target.url).create_database(name, self.directory, timeout)
        except DatabaseError as exc:
            raise DatabaseError(
                f"{target.name}: cannot create the throwaway database {name} on the server "
                f"of {target.display_url}: {exc}"
            ) from exc
        self.urls.append(url)
        self.say(f"{target.name}: throwaway database {redact_url(url)}")
        return url

    def drop(self, url: str) -> None:
        """Drop one now (a failed downgrade leaves a database not worth reusing)."""

        if url not in self.urls:  # only what this run created, never another database
            return
        try:
            for_url(url).drop_database(self.registry.settings.connect_timeout)
            self.urls.remove(url)
        except Exception as exc:  # reported; close() tries again
            from orch.store.db import describe_error

            self.problems.append(f"cannot drop {redact_url(url)}: {describe_error(exc)}")

    def close(self) -> None:
        for url in list(self.urls):
            self.drop(url)
        self._tmp.cleanup()


@contextlib.contextmanager
def scratch(registry: Registry, say: Say = _quiet) -> Iterator[Scratch]:
    """A :class:`Scratch` whose databases are gone when the block ends, however it ends."""
    s = Scratch(registry, say)
    try:
        with _stop_on_sigterm():
            yield s
    finally:
        # a second Ctrl-C while dropping must not leave the rest behind
        with _shielded():
            s.close()
        for problem in s.problems:
            say(f"warning: {problem}")


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """SIGINT ignored for the block (main thread only): the drops finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def migrated_databases(
    registry: Registry,
    env: str | None = None,
    names: Sequence[str] | None = None,
    say: Say = _quiet,
) -> Iterator[dict[str, str]]:
    """``{name: url}`` of throwaway databases upgraded to head, in dependency order.

    For tests that need the real schema: dropped when the block ends.
    """
    targets = selected_targets(registry, env, names)
    registry = registry.in_environment(env)
    with scratch(registry, say) as s:
        urls: dict[str, str] = {}
        for t in targets:
            url = s.create(t)
            with _connection(registry, url) as conn:
                _migrate(registry, t.db, url, conn, "upgrade", "heads")
            urls[t.name] = url
        yield urls


# ---------------------------------------------------------------- the checks


def check_migrations(
    registry: Registry,
    env: str | None = None,
    names: Sequence[str] | None = None,
    say: Say = _quiet,
) -> list[DatabaseChecks]:
    """Run every check of every (or each named) database; see the module docstring."""

    targets = selected_targets(registry, env, names)
    registry = registry.in_environment(env)
    out: list[DatabaseChecks] = []
    with scratch(registry, say) as s:
        for t in targets:
            assert t.url is not None
            say(f"{t.name}: testing its migrations")
            out.append(DatabaseChecks(t.name, for_url(t.url).name, _check_one(registry, t, s, say)))
    return out


def _check_one(registry: Registry, target: Target, s: Scratch, say: Say) -> list[CheckResult]:

    db = target.db
    graph = load_graph(db.versions, db.name)
    results: dict[str, CheckResult] = {}
    heads = list(graph.heads)
    if not heads:
        results["single_head"] = CheckResult("single_head", Verdict.NOT_APPLICABLE, "no revisions")
    elif len(heads) == 1:
        results["single_head"] = CheckResult("single_head", Verdict.PASSED, f"head {heads[0]}")
    else:
        results["single_head"] = CheckResult(
            "single_head",
            Verdict.FAILED,
            f"{len(heads)} heads: {', '.join(heads)} (join them: orch merge {db.name})",
        )

    url = s.create(target)
    reusable = True
    with _connection(registry, url) as conn:
        empty = schema_of(conn, registry, db)
        if not heads:
            results["upgrade"] = CheckResult("upgrade", Verdict.NOT_APPLICABLE, "no revisions")
            upgraded = True
        else:
            results["upgrade"], upgraded = _check_upgrade(registry, db, url, conn)
        results["models_match"] = _check_models(registry, db, url, conn, upgraded)
        if len(graph) and upgraded:
            # back to base for the stairway; any trouble: a fresh database instead
            try:
                _migrate(registry, db, url, conn, "downgrade", "base")
                reusable = schema_of(conn, registry, db) == empty
            except Exception:
                reusable = False
        else:
            reusable = upgraded
    if not len(graph):
        why = "no revisions"
        results["stairway"] = CheckResult("stairway", Verdict.NOT_APPLICABLE, why)
        results["no_trace"] = CheckResult("no_trace", Verdict.NOT_APPLICABLE, why)
    else:
        if not reusable:
            s.drop(url)
            url = s.create(target)
        with _connection(registry, url) as conn:
            results["stairway"], results["no_trace"] = _check_stairway(
                registry, db, url, conn, graph.ordered(set(graph.revs))
            )
    for c in CHECKS:
        say(f"  {db.name} {c}: {results[c].state}")
    return [results[c] for c in CHECKS]


def _check_upgrade(
    registry: Registry, db: DatabaseSpec, url: str, conn: Connection
) -> tuple[CheckResult, bool]:

    seen: list[str] = []
    try:
        _migrate(registry, db, url, conn, "upgrade", "heads", seen)
    except Exception as exc:
        rev = seen[-1] if seen else None
        return CheckResult("upgrade", Verdict.FAILED, describe_error(exc), rev), False
    return CheckResult("upgrade", Verdict.PASSED, f"base to head: {len(seen)} revision(s)"), True


def _check_models(
    registry: Registry, db: DatabaseSpec, url: str, conn: Connection, upgraded: bool
) -> CheckResult:

    if not db.metadata:
        return CheckResult(
            "models_match",
            Verdict.NOT_APPLICABLE,
            f"no 'metadata' in the registry (databases.{db.name}.metadata: module:attribute)",
        )
    if not upgraded:
        return CheckResult("models_match", Verdict.NOT_APPLICABLE, "the upgrade to head failed")
    try:
        diffs = model_differences(registry, db, url, conn)
    except OrchError:
        raise
    except Exception as exc:
        why = f"comparison failed: {describe_error(exc)}"
        return CheckResult("models_match", Verdict.FAILED, why)
    finally:
        conn.rollback()
    if diffs:
        return CheckResult(
            "models_match",
            Verdict.FAILED,
            f"{len(diffs)} difference(s) between the models and the migrated schema",
            differences=diffs,
        )
    return CheckResult("models_match", Verdict.PASSED, "models and migrated schema agree")


def _check_stairway(
    registry: Registry, db: DatabaseSpec, url: str, conn: Connection, order: Sequence[str]
) -> tuple[CheckResult, CheckResult]:
    """Each revision up, down (schema compared with before), up; stops at the first failure."""

    trace: CheckResult | None = None
    for rev in order:
        before = schema_of(conn, registry, db)
        for step, (direction, destination) in enumerate(
            [("upgrade", rev), ("downgrade", _below(rev)), ("upgrade", rev)]
        ):
            try:
                _migrate(registry, db, url, conn, direction, destination)
            except Exception as exc:
                what = ("upgrade", "downgrade", "upgrade after its downgrade")[step]
                why = f"{what}: {describe_error(exc)}"
                stairway = CheckResult("stairway", Verdict.FAILED, why, rev)
                if trace is None:
                    trace = CheckResult(
                        "no_trace",
                        Verdict.NOT_APPLICABLE,
                        f"revisions from {rev} on not checked: the stairway failed there"
                        if step < 2
                        else f"revisions after {rev} not checked: the stairway failed at {rev}",
                    )
                return stairway, trace
            if step == 1 and trace is None:
                diffs = schema_difference(before, schema_of(conn, registry, db))
                if diffs:
                    trace = CheckResult(
                        "no_trace",
                        Verdict.FAILED,
                        f"its downgrade leaves {len(diffs)} difference(s) in the schema",
                        rev,
                        diffs,
                    )
    stairway = CheckResult("stairway", Verdict.PASSED, f"{len(order)} revision(s) up, down, up")
    return stairway, trace or CheckResult(
        "no_trace", Verdict.PASSED, "every downgrade restores the schema"
    )


def _below(rev: str) -> str:
    """Alembic's destination one step below *rev* (only *rev* is undone, branches too)."""
    return f"{rev}@-1"


# ---------------------------------------------------------------- running Alembic


@contextlib.contextmanager
def _connection(registry: Registry, url: str) -> Iterator[Connection]:

    conn = connect(url, registry.settings.connect_timeout)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


def _migrate(
    registry: Registry,
    db: DatabaseSpec,
    url: str,
    conn: Connection,
    direction: str,
    destination: str,
    seen: list[str] | None = None,
) -> None:
    """Alembic's own run, outside any transaction of ours (one per revision, as orch runs)."""

    def before_step(step: Any) -> None:
        if seen is not None:
            seen.append(step_revision(step))

    if conn.in_transaction():
        conn.rollback()
    try:
        runner.run(registry, db, url, conn, direction, destination, before_step=before_step)
    finally:
        if conn.in_transaction():
            conn.rollback()


# ---------------------------------------------------------------- reflected schema


def schema_of(conn: Connection, registry: Registry, db: DatabaseSpec) -> dict[str, Any]:
    """The schema as the database reflects it: ``{table: {"columns": {...}, ...}}``.

    Columns map to ``TYPE NULL|NOT NULL``; primary key, indexes, unique and
    foreign keys are sets of one-line descriptions (their names included
    when the database keeps one).  The version table, orch's log table and
    ``exclude_tables`` are left out.
    """
    from sqlalchemy import inspect

    try:
        insp = inspect(conn)
        dialect = conn.dialect
        out: dict[str, Any] = {}
        for table in sorted(insp.get_table_names(schema=None)):
            if table in (db.version_table, registry.settings.log_table) or db.excluded(table):
                continue
            columns = {
                c["name"]: f"{_type(c['type'], dialect)} {'NULL' if c['nullable'] else 'NOT NULL'}"
                for c in insp.get_columns(table)
            }
            pk = insp.get_pk_constraint(table).get("constrained_columns") or []
            indexes = {
                f"{i['name']} ({'unique ' if i.get('unique') else ''}"
                f"{', '.join(str(c) for c in i.get('column_names') or [])})"
                for i in insp.get_indexes(table)
            }
            uniques = {
                f"{u.get('name') or '(unnamed)'} ({', '.join(u['column_names'])})"
                for u in insp.get_unique_constraints(table)
            }
            fks = {
                f"{f.get('name') or '(unnamed)'} ({', '.join(f['constrained_columns'])}) -> "
                f"{f['referred_table']} ({', '.join(f['referred_columns'])})"
                for f in insp.get_foreign_keys(table)
            }
            out[table] = {
                "columns": columns,
                "primary_key": {f"({', '.join(pk)})"} if pk else set(),
                "indexes": indexes,
                "unique_constraints": uniques,
                "foreign_keys": fks,
            }
        return out
    finally:
        conn.rollback()


def _type(t: Any, dialect: Any) -> str:
    try:
        return str(t.compile(dialect=dialect))
    except Exception:
        return repr(t)


_KIND = {
    "primary_key": "primary key",
    "indexes": "index",
    "unique_constraints": "unique constraint",
    "foreign_keys": "foreign key",
}


_OBJECT = {
    "indexes": "index",
    "unique_constraints": "unique_constraint",
    "foreign_keys": "foreign_key",
}


def schema_difference(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two :func:`schema_of` results, one dict per difference.

    Each has ``object`` (table, column, primary_key, index, unique_constraint,
    foreign_key), ``table``, ``before`` and ``after`` (None where it is absent)
    and a ``text`` for humans.
    """
    out: list[dict[str, Any]] = []
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table), after.get(table)
        if b is None:
            out.append(_diff("table", table, None, "present", f"table {table}: left behind"))
            continue
        if a is None:
            out.append(_diff("table", table, "present", None, f"table {table}: gone"))
            continue
        for col in sorted(set(b["columns"]) | set(a["columns"])):
            old, new = b["columns"].get(col), a["columns"].get(col)
            if old == new:
                continue
            if old is None:
                text = f"column {table}.{col} {new}: left behind"
            elif new is None:
                text = f"column {table}.{col} {old}: gone"
            else:
                text = f"column {table}.{col}: was {old}, now {new}"
            out.append(_diff("column", table, old, new, text, name=col))
        for key, kind in _KIND.items():
            for item in sorted(b[key] - a[key]):
                out.append(_diff(key, table, item, None, f"{kind} on {table} {item}: gone"))
            for item in sorted(a[key] - b[key]):
                out.append(_diff(key, table, None, item, f"{kind} on {table} {item}: left behind"))
    return out


def _diff(
    obj: str, table: str, before: str | None, after: str | None, text: str, name: str | None = None
) -> dict[str, Any]:
    d: dict[str, Any] = {"object": _OBJECT.get(obj, obj), "table": table}
    if name is not None:
        d["name"] = name
    d.update({"before": before, "after": after, "text": text})
    return d


def exit_code(results: Sequence[DatabaseChecks]) -> int:
    """1 when any check failed, else 0."""

    return EXIT_FAILED if any(r.failed for r in results) else EXIT_OK
