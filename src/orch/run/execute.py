"""Runs a :class:`~orch.planning.plan.Plan`: locks, one transaction per revision, order, workers.

Per database (:func:`run_one`): connect, take the migration lock, then *under
the lock* close rows of interrupted earlier runs, read the live revision,
refuse a dirty database, resolve the target and apply revision by revision
through Alembic, one transaction per revision, with an audit row per step.
Failures become results (:class:`DbResult`), never exceptions crossing
processes.

Across databases (:func:`execute`): a ready-set scheduler over the
dependency graph.  Alembic keeps module-global state, so parallel databases
run in forked worker processes (Alembic imported once in the parent before
the fork); ``jobs=1`` runs the same code inline.  A failed, locked or
refused database marks everything downstream ``skipped``; independent
databases go on (``--fail-fast``: nothing new starts after a failure).

Faults:

- The autobegin trap: any statement on the migration connection begins a
  transaction, and Alembic then treats the connection as the caller's and
  never commits per revision.  Every statement orch issues outside a
  revision is followed by a commit, and :func:`orch.alembic_bridge.runner.run` refuses
  a connection that is inside a transaction.
- A SIGKILLed orch: locks are session/connection/process-bound, so they die
  with it; PostgreSQL sessions set ``client_connection_check_interval`` so a
  backend busy in a long statement notices the dead client within a second;
  worker processes get ``PR_SET_PDEATHSIG`` so they die with the parent.
- A worker killed on its own (OOM killer, ``kill -9``): only its database
  fails, with where it stands read from the database (:func:`_died`); the
  pool (:class:`_Pool`) goes on with a fresh worker.
- Concurrent runs and the dependency rule: checked again under the locks
  (:func:`_dependency_rule`; the lock order is in :mod:`orch.store.locks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import stopping
from orch.alembic_bridge import runner as alembic_run
from orch.alembic_bridge.internals import step_revision
from orch.backends import for_url
from orch.config.registry import DatabaseSpec, Registry, Target
from orch.config.revisions import Graph, Requirement, load_graph, requirements
from orch.errors import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    DatabaseError,
    OrchError,
    RefusedError,
)
from orch.outcomes import Direction, Outcome
from orch.planning.live import edited_revisions, graphs_for, read_live, unrecorded_revisions
from orch.planning.plan import Plan, PlanStep, edges
from orch.planning.resolve import Resolved, resolve_target
from orch.redact import REDACTOR, redact
from orch.run.hooks import run_logged, timestamp
from orch.run.rollout import Rollout
from orch.store.aio import close_kept, run_on_connection
from orch.store.audit import (
    NOTHING_APPLIED,
    AuditLog,
    TableTooNew,
    dirty_revision,
    read_run_state,
    recorded_hashes,
    repair_hint,
)
from orch.store.db import check_version_schema, describe_error, read_current_readonly
from orch.store.locks import LockCancelled, LockTimeout, MigrationLock, lock_order


@dataclass
class DbResult:
    """What happened to one database (the summary row and the JSON entry)."""

    name: str
    direction: Direction
    outcome: Outcome
    start: list[str] | None = None
    end: list[str] | None = None
    applied: list[str] = field(default_factory=list)
    revision: str | None = None  # the revision that failed (or left the database dirty)
    error: str | None = None
    duration: float = 0.0
    lines: list[str] = field(default_factory=list)
    dirty: bool = False  # the database is dirty now (MySQL/MariaDB): repair, then stamp
    rollback: dict[str, Any] | None = None  # --on-failure rollback: what undoing it did
    #: what an operator must hear even with --json (stderr): edited revisions run over
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "outcome": self.outcome,
            "from": self.start,
            "to": self.end,
            "applied": self.applied,
            "revision": self.revision,
            "error": self.error,
            "dirty": self.dirty,
            "duration": round(self.duration, 3),
            "rollback": self.rollback,
        }


@dataclass(frozen=True)
class Task:
    """Everything one database's run needs; picklable for worker processes."""

    registry: Registry
    target: Target
    step: PlanStep
    run_id: str
    lock_timeout: float
    secrets: tuple[str, ...] = ()
    git_commit: str | None = None
    stamp: str = ""  # the run's start (UTC) for hooks' {timestamp}: one per run, not per hook
    purpose: str = ""  # "rollback" when this run undoes a failed upgrade (audit detail)
    # the dependency rule, checked again under the lock (see _dependency_rule): an
    # upgrade's dependencies, a downgrade's dependents in lock order; () for none
    guard: tuple[Target, ...] = ()
    # requirements across databases (orch_requires) naming this database, either side, and
    # the other databases they name: checked under the lock (see _requirements_rule)
    requires: tuple[Requirement, ...] = ()
    peers: tuple[Target, ...] = ()
    #: ``orch accept``: (revision, why) whose file's hash now is recorded as accepted
    accept: tuple[str, str] | None = None
    #: what the run selected, recorded in its audit rows (``upgrade --retry`` reads it)
    scope: str | None = None


def _destination(resolved_target: tuple[str, ...], label: str, direction: str) -> str:
    """A stamp's destination (upgrades and downgrades use Alembic's, see ``_resolve``)."""
    if not resolved_target:
        return "base"
    if len(resolved_target) == 1:
        return resolved_target[0]
    return "heads" if direction != "downgrade" else resolved_target[0]


def run_one(task: Task) -> DbResult:
    """Migrate one database.  Never raises for database problems: returns a result."""

    for s in task.secrets:
        REDACTOR.add(s)
    t0 = time.monotonic()
    db = task.target.db
    direction = task.step.direction
    res = DbResult(db.name, direction, Outcome.FAILED)
    url = task.target.url
    if url is None:
        res.outcome, res.error = Outcome.REFUSED, task.target.missing
        return res
    backend = for_url(url)
    transactional = backend.transactional_ddl
    # a tenant's schema made the connection's own (PostgreSQL's search_path): orch's
    # tables and Alembic's version table are named without it, so the SQL compiled for
    # one tenant serves the next (schema-qualified, every tenant compiled its own: a
    # third of a tenant's CPU).  The lock key keeps the schema (see orch.store.locks).
    sql_db = db
    if db.schema and db.version_table_schema == db.schema and backend.schema_scopes_names:
        sql_db = dataclasses.replace(db, version_table_schema=None)
    if stopping.requested():  # queued in the pool before the stop: do not start
        res.outcome, res.error = Outcome.SKIPPED, f"{stopping.reason()}: not started"
        return res

    def say(line: str) -> None:
        res.lines.append(redact(line))

    def on_connection(conn: Any) -> None:
        """Everything done on the migration connection (the same for sync and async drivers)."""
        try:
            _session_setup(conn, url, task.registry)
            exists = None
            if db.schema:  # a tenant's schema (a fleet): the connection may be reused
                exists = backend.enter_schema(conn, db.schema)  # PostgreSQL: and it exists
            if not (exists and db.version_table_schema == db.schema):
                check_version_schema(conn, db)
            conn.rollback()  # nothing to do when nothing is open
            lock = MigrationLock(
                conn, db, url, task.lock_timeout, on_wait=say, cancelled=stopping.requested
            )
            try:
                lock.acquire()
            except LockTimeout as exc:
                res.outcome, res.error = Outcome.LOCKED, str(exc)
                return
            except LockCancelled:
                res.outcome, res.error = Outcome.SKIPPED, f"{stopping.reason()}: not started"
                return
            held = contextlib.ExitStack()  # a downgrade's locks of its dependents
            try:
                # -- everything below runs under the lock: nobody else migrates db now
                audit = AuditLog(
                    conn,
                    task.registry.settings.log_table,
                    sql_db.version_table_schema,
                    task.run_id,
                    db.name,
                    task.target.env,
                    git_commit=task.git_commit,
                    scope=task.scope,
                )
                log_table = task.registry.settings.log_table
                # one statement for the reads below; None on a first run or another
                # table shape: then they are made one by one, and say what is wrong
                with backend.single_statements(conn):
                    state = read_run_state(conn, log_table, sql_db)
                created = False  # the audit table made just now: nothing to read back
                if state is None:
                    if _settles_itself(task) and _settle(
                        task, conn, sql_db, transactional, res, say
                    ):
                        return  # at head, never run by orch here: nothing created (see _settle)
                    try:
                        created = audit.ensure()
                    except TableTooNew as exc:  # a newer orch's table: read it, never write
                        res.outcome, res.error = Outcome.REFUSED, str(exc)
                        return
                running = state.running if state is not None else () if created else None
                interrupted = audit.close_interrupted(transactional, running)
                if interrupted:  # its UPDATE; else the reads below share its transaction
                    conn.commit()
                    say(
                        f"{db.name}: an earlier run was interrupted during "
                        f"{', '.join(interrupted)} "
                        + ("(rolled back)" if transactional else "(may be half-applied)")
                    )
                if state is not None:
                    current = state.current
                else:
                    current = read_current_readonly(conn, sql_db)  # only reads in flight
                res.start = res.end = list(current)
                _progress("start", res.start)
                dirty = None
                if not transactional:
                    dirty = dirty_revision(
                        conn, task.registry.settings.log_table, sql_db.version_table_schema, db.name
                    )
                # read-only so far: one transaction up to the recorded hashes (round trips)
                if dirty is not None and direction != "stamp":
                    conn.commit()
                    rev, why = dirty
                    res.outcome, res.revision, res.dirty = Outcome.REFUSED, rev, True
                    res.error = (
                        f"dirty: revision {rev} failed or was interrupted half-way"
                        + (f" ({why})" if why else "")
                        + f" and this backend cannot roll DDL back; {repair_hint(db.name, rev)}"
                    )
                    return
                graph = _graph(task, db.versions, db.name)
                if state is not None:
                    recorded = state.recorded
                elif created:
                    recorded = {}
                else:
                    recorded = recorded_hashes(
                        conn, log_table, sql_db.version_table_schema, db.name
                    )
                conn.commit()
                adopted = unrecorded_revisions(graph, current, recorded)
                if adopted:  # applied before orch recorded hashes: their files now, as baseline
                    audit.adopt(adopted)
                    conn.commit()
                    recorded = {**recorded, **adopted}
                edited = edited_revisions(graph, current, recorded)
                if task.accept:
                    _accept(task, conn, audit, graph, current, recorded, res, say)
                    return
                try:
                    resolved = _resolve(task, current, graph)
                except OrchError as exc:
                    res.outcome, res.error = Outcome.REFUSED, str(exc)
                    return
                if edited and direction != "stamp":
                    refused = _edited(task, edited, bool(resolved.path), res)
                    if refused:
                        return
                ended: tuple[str, ...] | None = None
                if direction == "stamp":
                    _stamp(
                        task,
                        conn,
                        audit,
                        resolved.target,
                        resolved.label,
                        res,
                        say,
                        dirty,
                        purge=bool(graph.unknown(current)),
                        alembic_db=sql_db,
                    )
                elif not resolved.path:
                    res.outcome = Outcome.UNCHANGED
                    say(f"{db.name}: already at {', '.join(current) or 'base'}")
                    ended = current  # nothing ran, under the lock: no need to read them again
                elif stopping.requested():
                    res.outcome, res.error = Outcome.SKIPPED, f"{stopping.reason()}: not started"
                elif not _dependency_rule(task, res, say, held):
                    pass  # refused (or locked) before anything changed
                elif not _requirements_rule(task, resolved.path, res):
                    pass  # refused before anything changed
                elif _hook(task, conn, audit, f"before_{direction}", current, res, say):
                    # Alembic starts from the rows read above, unless a hook ran since
                    hooked = (
                        f"before_{direction}" in task.registry.environment(task.target.env).hooks
                    )
                    ended = _migrate(
                        task,
                        conn,
                        audit,
                        resolved,
                        res,
                        say,
                        transactional,
                        graph,
                        heads=None if hooked else current,
                        alembic_db=sql_db,
                    )
                conn.rollback()
                if ended is not None and res.outcome in (Outcome.DONE, Outcome.UNCHANGED):
                    res.end = list(ended)  # what Alembic wrote and committed, under the lock
                else:
                    # rolled back: none in flight
                    res.end = list(read_current_readonly(conn, sql_db))
                conn.commit()
                if res.outcome == Outcome.DONE:
                    _hook(task, conn, audit, f"after_{direction}", res.end, res, say)
            finally:
                held.close()
                lock.release()
        except Exception as exc:  # a failure outside a revision (lock SQL, audit table, ...)
            res.outcome = Outcome.FAILED
            res.error = res.error or describe_error(exc)
            if res.applied:  # revisions went in, then the connection broke: end unknown
                res.end = None

    try:
        run_on_connection(
            url,
            task.registry.settings.connect_timeout,
            on_connection,
            keep=db.schema is not None,  # tenants as schemas: the next one reuses it
            # tenants as databases of one server: one Engine (dialect set-up, compiled SQL)
            shared=db.fleet is not None and db.schema is None,
        )
    except DatabaseError as exc:  # the connection could not be opened
        res.error = f"unreachable: {exc}"
    finally:
        res.duration = time.monotonic() - t0
    return res


#: graphs this process read, per run and version directory (see _graph)
_GRAPHS: dict[tuple[str, Path], Graph] = {}


def _graph(task: Task, versions: Path, name: str) -> Graph:
    """The revision graph of *versions*, read once per run in this process.

    Each database's run used to read and parse every revision file of its
    directory again: a fleet's tenants share one directory, so 1,000
    tenants over a history of 200 revisions read 200,000 files.  A run's
    databases now share the graph this process read first in the run (a
    worker lives for one run; inline runs key on the run id too), and with
    it the sha256 of each file (see :meth:`Graph.sha256`).  A file edited
    while a run is going is seen by the next run; if Alembic's
    ScriptDirectory (which does look again) disagrees with the graph, the
    steps differ and the database runs nothing (see
    :func:`orch.alembic_bridge.runner.run`).
    """
    key = (task.run_id, versions)
    graph = _GRAPHS.get(key)
    if graph is None:
        if any(run != task.run_id for run, _ in _GRAPHS):
            _GRAPHS.clear()  # an earlier run's (a program that runs several): never again
        graph = _GRAPHS[key] = load_graph(versions, name)
    return graph if graph.name == name else graph.renamed(name)


def _settle(
    task: Task,
    conn: Any,
    sql_db: DatabaseSpec,
    transactional: bool,
    res: DbResult,
    say: Callable[[str], None],
) -> bool:
    """True (outcome ``unchanged``) when a tenant orch never ran on is already at its target.

    For a tenant database the plan did not read (see :func:`_settles_itself`),
    under its lock, when the one-statement read found no audit table of
    this orch (:func:`~orch.store.audit.read_run_state` returned None): a
    tenant migrated by plain Alembic, say.  A tenant at head is reported
    ``unchanged`` without creating orch's audit table there or recording
    hashes, as the read before the run used to settle it: an ``upgrade
    --all`` with nothing pending writes nothing.  Anything else (behind, an
    unknown revision, a dirty mark, a read that fails) takes the usual path.
    """
    db = task.target.db
    try:
        current = read_current_readonly(conn, sql_db)
        graph = _graph(task, db.versions, db.name)
        if graph.unknown(current) or graph.pending(current) or _resolve(task, current, graph).path:
            conn.rollback()
            return False
        if not transactional and dirty_revision(
            conn, task.registry.settings.log_table, sql_db.version_table_schema, db.name
        ):
            conn.rollback()
            return False
        conn.rollback()
    except Exception:
        with contextlib.suppress(Exception):
            conn.rollback()
        return False
    res.outcome = Outcome.UNCHANGED
    res.start = res.end = list(current)
    say(f"{db.name}: already at {', '.join(current) or 'base'}")
    return True


def _resolve(task: Task, current: tuple[str, ...], graph: Any = None) -> Resolved:
    """The target resolved under the lock by Alembic's ScriptDirectory that will run it.

    A plan that was announced (the protected prompt showed its revisions)
    must still hold: if Alembic's steps from the revision read now differ
    from the announced ones, the database runs nothing (``refused``, naming
    both).  A plan made without reading the database (``upgrade --all``) is
    resolved here.
    """

    db = task.target.db
    step = task.step
    if graph is None:
        graph = _graph(task, db.versions, db.name)
    graph.bind_script(lambda: alembic_run.script_directory(task.registry, db))
    resolved = resolve_target(graph, current, step.target, step.direction)
    announced = step.resolved
    if step.announced and announced is not None and resolved.path != announced.path:
        raise RefusedError(
            f"announced {', '.join(announced.path) or 'nothing'} from "
            f"{', '.join(step.current or ()) or 'base'}, but from "
            f"{', '.join(current) or 'base'} now Alembic would run "
            f"{', '.join(resolved.path) or 'nothing'}; nothing was run"
        )
    return resolved


def _dependency_rule(
    task: Task, res: DbResult, say: Callable[[str], None], held: contextlib.ExitStack
) -> bool:
    """The dependency rule again, under the lock, just before anything changes.

    The plan checked it from revisions read before any lock, which a
    concurrent run may change in between.  So, with *db*'s own lock held:

    - a **downgrade** takes the locks of *db*'s dependents (in the order of
      :func:`orch.store.locks.lock_order`), checks that they are at base and keeps
      those locks (in *held*) until its run on *db* ends: no dependent can
      move up meanwhile;
    - an **upgrade** reads its dependencies and checks that they are at head.
      It needs no lock of theirs: a downgrade of a dependency holds this
      database's lock (see above) from its check to its end, so while this
      run holds that lock no such downgrade is running or can start, and the
      dependency's committed revision is the one it keeps.  Taking a
      dependency's lock here would make every dependent of a busy database
      (a fleet of tenants on one ``core``) wait for each other.

    False when the rule fails: *res* is ``refused`` (or ``locked``/``skipped``
    when a dependent's lock cannot be had), nothing was changed.  Without
    ``--force``/``--ignore-deps`` only; a rollback returns databases to where
    the run found them and is not checked.
    """
    if not task.guard:
        return True
    if task.step.direction == "downgrade":
        return _dependents_at_base(task, res, say, held)

    behind: list[str] = []
    for dep in task.guard:
        try:
            current = read_live(dep, task.registry)[0]
        except Exception as exc:
            from orch.store.db import describe_error

            res.outcome = Outcome.REFUSED
            res.error = f"cannot check that its dependency {dep.name} is at head: " + (
                describe_error(exc)
            )
            return False
        if not _at_head(dep, current):
            behind.append(f"{dep.name} (at {', '.join(current) or 'base'})")
    if behind:
        res.outcome = Outcome.REFUSED
        res.error = (
            f"dependency behind: {', '.join(behind)}, not at head (read under {res.name}'s "
            "lock: it moved after the plan was made); nothing was changed. Upgrade it first, "
            "or use --ignore-deps"
        )
        return False
    return True


def _requirements_rule(task: Task, path: Sequence[str], res: DbResult) -> bool:
    """The requirements across databases, again under the lock, just before anything changes.

    The plan ordered the steps so that every requirement holds when each one
    starts; a concurrent run may have moved another database in between.
    An upgrade checks that each revision of another database that a revision
    it applies requires is applied there; a downgrade that no applied
    revision of another database requires a revision it removes.  The other
    database is read, not locked (as the upgrade half of
    :func:`_dependency_rule` reasons).  False: *res* is ``refused``, nothing
    was changed.
    """
    if not task.requires:
        return True
    from orch.store.db import describe_error

    db = task.target.name
    up = task.step.direction == "upgrade"
    peers = {t.name: t for t in task.peers}
    revs = set(path)
    seen: dict[str, set[str]] = {}
    broken: list[str] = []
    for r in task.requires:
        if up and r.db == db and r.revision in revs and r.on_db in peers:
            other, rev, want = r.on_db, r.on_revision, True
        elif not up and r.on_db == db and r.on_revision in revs and r.db in peers:
            other, rev, want = r.db, r.revision, False
        else:
            continue
        if other not in seen:
            target = peers[other]
            try:
                current = read_live(target, task.registry)[0]
            except Exception as exc:
                res.outcome = Outcome.REFUSED
                res.error = f"cannot check the requirement {r}: {describe_error(exc)}"
                return False
            graph = _graph(task, target.db.versions, other)
            seen[other] = graph.ancestors(current) if not graph.unknown(current) else set(current)
        if (rev in seen[other]) != want:
            broken.append(f"{r} ({other}@{rev} {'not applied' if want else 'still applied'})")
    if broken:
        res.outcome = Outcome.REFUSED
        res.error = (
            f"requirement not met: {'; '.join(broken)} (read under {db}'s lock: it moved after "
            "the plan was made); nothing was changed"
        )
        return False
    return True


def _dependents_at_base(
    task: Task, res: DbResult, say: Callable[[str], None], held: contextlib.ExitStack
) -> bool:
    """A downgrade's half of :func:`_dependency_rule`: lock the dependents, check them."""
    from orch.store.db import connect, describe_error, read_current

    settings = task.registry.settings
    above: list[str] = []
    for dep in task.guard:
        url = dep.url or ""
        try:
            conn = None
            if not url or for_url(url).lock_needs_connection:  # SQLite: a file lock
                conn = connect(url, settings.connect_timeout)
                held.callback(conn.close)
            lock = MigrationLock(
                conn,  # type: ignore[arg-type]
                dep.db,
                url,
                task.lock_timeout,
                on_wait=say,
                cancelled=stopping.requested,
            )
            lock.acquire()
            held.callback(lock.release)
            if conn is None:
                current = read_live(dep, task.registry)[0]  # read-only: creates no file
            else:
                current = read_current(conn, dep.db)
                conn.commit()
        except LockTimeout as exc:
            res.outcome, res.error = Outcome.LOCKED, f"its dependent {dep.name}: {exc}"
            return False
        except LockCancelled:
            res.outcome, res.error = Outcome.SKIPPED, f"{stopping.reason()}: not started"
            return False
        except Exception as exc:
            res.outcome = Outcome.REFUSED
            res.error = f"cannot check that its dependent {dep.name} is at base: " + (
                describe_error(exc)
            )
            return False
        if current:
            above.append(f"{dep.name} (at {', '.join(current)})")
    if above:
        res.outcome = Outcome.REFUSED
        res.error = (
            f"dependents not at base: {', '.join(above)} (read under their locks: they moved "
            "after the plan was made); nothing was changed. Downgrade them to base first, "
            "or use --force"
        )
        return False
    return True


def _at_head(target: Target, current: Sequence[str]) -> bool:

    graph = load_graph(target.db.versions, target.name)
    return not graph.unknown(tuple(current)) and not graph.pending(tuple(current))


def _hook(
    task: Task,
    conn: Any,
    audit: Any,
    name: str,
    at: Sequence[str],
    res: DbResult,
    say: Callable[[str], None],
) -> bool:
    """Run the environment's hook *name* for this database; False if it failed.

    A failing ``before_*`` hook stops the database before anything changes
    (outcome ``failed``; its dependents are skipped).  A failing ``after_*``
    hook leaves the migration in place but fails the database too: whatever
    it was for (a grant, a cache flush, a notice) did not happen.
    """

    conn.rollback()  # no transaction open while the hook runs
    result = run_logged(
        name,
        registry=task.registry,
        target=task.target,
        conn=conn,
        audit=audit,
        stamp=task.stamp,
        revision=",".join(at) or None,
        say=say,
    )
    if result is None or result.ok:
        return True
    res.outcome = Outcome.FAILED
    if name.startswith("before_"):
        res.error = f"{result.error}; nothing was changed"
    else:
        res.error = f"migrated to {','.join(at) or 'base'}, then {result.error}"
    return False


def _edited(task: Task, edited: Sequence[str], runs: bool, res: DbResult) -> bool:
    """Edited revisions applied here: refuse in a protected environment, else warn.

    Returns True when refused.  *runs*: the run has revisions to apply (a
    run that changes nothing is never refused, only warned about).  Undoing
    a failed run (``--on-failure rollback``) is never refused: it puts back
    what this run, allowed, changed.
    """
    name = task.target.db.name
    revs = ", ".join(edited)
    what = (
        f"revision {revs} applied here no longer matches its file (edited since it ran, "
        "or since its edit was accepted)"
    )
    how = f"restore the file, or record the edit as known: 'orch accept {name}@{edited[0]} -m WHY'"
    protected = task.registry.environment(task.target.env).protected
    if protected and runs and task.purpose != "rollback":
        res.outcome, res.revision = Outcome.REFUSED, edited[0]
        res.error = f"{what}; environment {task.target.env!r} is protected: {how}; nothing was run"
        return True
    res.warnings.append(f"warning: {name}: {what}; {task.step.direction} goes on; {how}")
    return False


def _accept(
    task: Task,
    conn: Any,
    audit: Any,
    graph: Any,
    current: tuple[str, ...],
    recorded: dict[str, str],
    res: DbResult,
    say: Callable[[str], None],
) -> None:
    """``orch accept``: record the file's hash now as the accepted one, with who and why.

    Only for a revision applied here (an edit of one that is not has nothing
    to accept: it runs as it is).  When the file already matches, nothing is
    written (``unchanged``).
    """
    assert task.accept is not None
    rev, why = task.accept
    name = task.target.db.name
    if rev not in graph.ancestors(c for c in current if c in graph):
        res.outcome = Outcome.REFUSED
        res.error = (
            f"revision {rev} is not applied in {task.target.env} (at "
            f"{', '.join(current) or 'base'}): there is no edit to accept; nothing was changed"
        )
        return
    digest = graph.sha256(rev)
    if digest is None:
        res.outcome, res.error = Outcome.REFUSED, f"cannot read the file of revision {rev}"
        return
    if recorded.get(rev) == digest:
        res.outcome = Outcome.UNCHANGED
        say(f"{name}: {rev} matches the hash recorded here; nothing to accept")
        return
    audit.record(rev, "accept", "ok", detail=why, sha256=digest)
    conn.commit()
    res.outcome = Outcome.DONE
    res.applied = []
    say(f"{name}: accepted {rev} as it is now (sha256 {digest[:12]})")


def _session_setup(conn: Any, url: str, registry: Registry) -> None:
    """Per-session settings: end orphaned work promptly, fail fast behind DDL locks."""

    done = ("orch_session", registry.settings.ddl_lock_timeout)
    if conn.info.get("orch_session") == done:  # a kept connection (tenants): set up once
        return
    for_url(url).session_setup(conn, registry.settings.ddl_lock_timeout)
    conn.info["orch_session"] = done


def _migrate(
    task: Task,
    conn: Any,
    audit: Any,
    resolved: Any,
    res: DbResult,
    say: Callable[[str], None],
    transactional: bool,
    graph: Any = None,
    *,
    heads: Sequence[str] | None = None,
    alembic_db: DatabaseSpec | None = None,
) -> tuple[str, ...] | None:
    """Apply *resolved*'s path, one transaction per revision, recording each step.

    *heads*: the version rows read under the lock (Alembic starts from them).

    Returns the version rows Alembic left after the last revision it
    committed (sorted, as :func:`orch.store.db.read_current` reads them), or
    None when it committed none: a run that is done need not read them
    again (the lock is held, nobody else wrote them).

    Every revision's ``running`` row is committed before its first statement
    runs (visible to ``orch log``; on MySQL it is the dirty marker that must
    survive DDL that cannot roll back).  The first revision's row gets a
    transaction of its own; each later one is written inside the previous
    revision's transaction, together with that revision's version update and
    ``ok``: one commit per revision instead of two (a third fewer round trips
    per revision on a server, one fsync fewer on SQLite).  A stop between two
    revisions deletes the row written ahead for the one that will not start.
    A revision counts as applied only once the next one starts (or the run
    ends): then its transaction has committed.
    """
    from sqlalchemy import event

    from orch.store.db import describe_error

    db = task.target.db
    direction = task.step.direction
    state: dict[str, Any] = {
        "row": None,
        "rev": None,
        "t": 0.0,
        "unconfirmed": None,
        "writes": 0,
        "revs": [],  # the revisions Alembic will run, in order
        "i": -1,  # the index in "revs" of the revision in flight
        "ahead": None,  # the row id of the next revision, written ahead
        "heads": None,  # the version rows after the revision in flight (Alembic's)
    }
    detail = task.purpose or None

    def sha256(rev: str) -> str | None:
        """An upgrade's row records the file it ran (see orch.store.audit)."""
        if graph is None or direction != Direction.UPGRADE:
            return None
        digest: str | None = graph.sha256(rev)
        return digest

    def count_writes(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        """Statements of the revision that succeeded and may have changed something."""
        words = statement.lstrip()[:8].split(None, 1)
        if not words or words[0].upper() not in _READ_ONLY:
            state["writes"] += 1

    say(
        f"{db.name}: {direction} {', '.join(res.start or []) or 'base'} -> "
        f"{resolved.label} ({len(resolved.path)} revision(s))"
    )

    def confirm() -> None:
        if state["unconfirmed"] is not None:
            rev, took = state["unconfirmed"]
            res.applied.append(rev)
            _progress("applied", rev)
            say(f"  {rev} ok ({took:.2f}s)")
            state["unconfirmed"] = None
            state["row"] = None

    def on_plan(planned: Sequence[Any]) -> None:
        state["revs"] = [step_revision(step) for step in planned]

    def before_step(step: Any) -> None:
        confirm()  # the previous revision's transaction has committed
        rev = step_revision(step)
        state["i"] += 1
        if stopping.requested():  # before the revision's transaction: nothing of it ran
            raise stopping.Interrupted(rev)
        state["rev"] = rev
        _progress("revision", rev)
        state["t"] = time.monotonic()
        if state["ahead"] is not None:  # committed with the previous revision
            state["row"], state["ahead"] = state["ahead"], None
        else:  # the run's first revision: its row committed on its own (see start_committed)
            state["row"] = audit.start_committed(rev, direction, detail=detail, sha256=sha256(rev))
        conn.commit()  # none open: Alembic begins (and commits) the revision's own
        state["writes"] = 0

    def on_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        # inside the revision's transaction: its row is "ok", the next one's "running"
        following = state["i"] + 1
        if following < len(state["revs"]) and not stopping.requested():
            rev = state["revs"][following]
            state["ahead"] = audit.finish_and_start(
                state["row"], rev, direction, detail, sha256(rev)
            )
        else:
            audit.finish(state["row"], "ok")
        state["unconfirmed"] = (state["rev"], time.monotonic() - state["t"])
        state["heads"] = tuple(sorted(str(h) for h in heads))

    event.listen(conn, "after_cursor_execute", count_writes)
    try:
        with stopping.abortable():
            alembic_run.run(
                task.registry,
                alembic_db or db,
                task.target.url or "",
                conn,
                direction,
                resolved.destination,
                before_step=before_step,
                on_apply=on_apply,
                on_plan=on_plan,
                expect=resolved.path,
                heads=heads,
            )
        conn.commit()
        confirm()
        res.outcome = Outcome.DONE
    except alembic_run.StepsDiffer as exc:  # raised before Alembic's first step: nothing ran
        with contextlib.suppress(Exception):
            conn.rollback()
        res.outcome, res.error = Outcome.REFUSED, str(exc)
        say(f"  {db.name} refused: {exc}")
    except stopping.Interrupted as exc:
        # a clean stop between revisions: nothing to undo, no failed row (not dirty)
        with contextlib.suppress(Exception):
            conn.rollback()
            if state["ahead"] is not None:  # written with the last revision; never started
                audit.discard(state["ahead"])
                conn.commit()
        left = len(resolved.path) - len(res.applied)
        at = res.applied[-1] if res.applied else ",".join(res.start or []) or "base"
        if not res.applied:  # stopped before its first revision (e.g. during its hook)
            res.outcome, res.error = Outcome.SKIPPED, f"{stopping.reason()}: not started"
        else:
            res.outcome = Outcome.FAILED
            res.error = (
                f"{stopping.reason()}: stopped at {at} before {exc}, "
                f"{left} of {len(resolved.path)} revision(s) not run"
            )
        say(f"  {res.error}")
    except KeyboardInterrupt:
        _aborted(conn, audit, state, res, say, transactional)
    except Exception as exc:
        error = describe_error(exc)
        with contextlib.suppress(Exception):
            conn.rollback()
        rev = state["rev"] if state["row"] is not None else None
        res.outcome, res.revision, res.error = Outcome.FAILED, rev, error
        say(f"  {rev or db.name} FAILED: {error}")
        # nothing of the revision ran (it raised before its first write, or its
        # first statement failed, which MySQL 8 / MariaDB 10.6+ DDL undoes):
        # the database is at its last good revision, as after a rollback
        clean = rev is not None and state["writes"] == 0
        if rev is not None and not transactional and not clean:
            res.dirty = True
            res.error = (
                f"{error}; the database is dirty (this backend cannot roll DDL back): "
                f"{repair_hint(db.name, rev)}"
            )
        try:
            if state["row"] is not None:
                detail = NOTHING_APPLIED + (f" ({task.purpose})" if task.purpose else "")
                audit.finish(state["row"], "failed", error=error, detail=detail if clean else None)
            else:  # before any revision began: nothing of the schema changed
                audit.record(None, direction, "failed", error=error)
            conn.commit()
        except Exception:
            with contextlib.suppress(Exception):
                conn.rollback()
    finally:
        with contextlib.suppress(Exception):
            event.remove(conn, "after_cursor_execute", count_writes)
    after: tuple[str, ...] | None = state["heads"]
    return after if res.outcome == Outcome.DONE else None


# statements that change nothing (a revision that only read before failing is not dirty)
_READ_ONLY = frozenset({"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH"})


def _aborted(
    conn: Any,
    audit: Any,
    state: dict[str, Any],
    res: DbResult,
    say: Callable[[str], None],
    transactional: bool,
) -> None:
    """A second signal cancelled the revision in flight: say what that left behind.

    The driver may have dropped the connection while cancelling; then the
    revision's ``running`` row stays and the next run closes it under the
    lock (as for a killed run).
    """
    rev = state["rev"]
    with contextlib.suppress(Exception):
        conn.rollback()
    res.outcome, res.revision = Outcome.FAILED, rev
    if transactional:
        res.error = f"{stopping.reason()} twice: revision {rev} aborted and rolled back"
    else:
        res.dirty = True
        res.error = (
            f"{stopping.reason()} twice: revision {rev} aborted half-way; this backend cannot "
            f"roll DDL back, so the database is dirty: {repair_hint(res.name, rev)}"
        )
    say(f"  {rev} ABORTED: {res.error}")
    with contextlib.suppress(Exception):
        if state["row"] is not None:
            audit.finish(state["row"], "failed", error=res.error)
            conn.commit()


def _stamp(
    task: Task,
    conn: Any,
    audit: Any,
    target: tuple[str, ...],
    label: str,
    res: DbResult,
    say: Callable[[str], None],
    dirty: tuple[str, str | None] | None,
    *,
    purge: bool = False,
    alembic_db: DatabaseSpec | None = None,
) -> None:
    """Set the version rows; an ``ok`` stamp row also clears a dirty marker.

    ``purge``: the database is at a revision no file declares (a history
    whose ids were changed, a row written by hand).  Alembic cannot walk from
    a revision it does not know, so the rows are deleted and the target
    written, in the one transaction of the stamp (Alembic's ``stamp --purge``).
    """
    from orch.store.db import describe_error

    db = task.target.db
    current = tuple(res.start or ())
    destination = _destination(target, label, "stamp")
    revs = ",".join(target) or "base"
    detail = f"from {','.join(current) or 'base'}"
    if dirty is not None:
        detail += f"; clears dirty {dirty[0]}"
    try:
        alembic_run.run(
            task.registry,
            alembic_db or db,
            task.target.url or "",
            conn,
            "stamp",
            destination,
            purge=purge,
        )
        conn.commit()
    except Exception as exc:
        error = describe_error(exc)
        with contextlib.suppress(Exception):
            conn.rollback()
        res.outcome, res.error = Outcome.FAILED, error
        audit.record(revs, "stamp", "failed", error=error, detail=detail)
        conn.commit()
        return
    audit.record(revs, "stamp", "ok", detail=detail)
    conn.commit()
    same = tuple(sorted(target)) == tuple(sorted(current))
    res.outcome = Outcome.UNCHANGED if same and dirty is None else Outcome.DONE
    say(
        f"{db.name}: stamped {', '.join(target) or 'base'}"
        + (f" (dirty marker of {dirty[0]} cleared)" if dirty is not None else "")
    )


# ---------------------------------------------------------------- fleet


def _worker_init(parent: int) -> None:
    """Die with the parent: a SIGKILLed orch must not leave migrations running.

    ``PR_SET_PDEATHSIG`` fires when the thread that created the worker ends.
    :class:`_Pool` starts every worker from the thread that runs
    :func:`execute`, which for the CLI is the main thread, i.e. the whole
    orch process; spawned workers (see :func:`start_method`) are direct
    children too.  If the parent died before the signal was armed, the
    worker is already orphaned: leave.

    SIGINT and SIGTERM are the parent's to handle (graceful stop, see
    :mod:`orch.stopping`); a terminal's Ctrl-C reaches the whole process group.
    """
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:
        os._exit(1)
    stopping.worker_signals()


def start_method() -> str:
    """``fork`` when this process has one thread (the CLI), else ``spawn``.

    A forked child gets a copy of every lock as it was at the fork, but only
    the forking thread.  If another thread held a lock (OpenSSL's, malloc's,
    a driver's) at that moment, the worker hangs forever the first time it
    needs it; this was seen as a worker spinning in OpenSSL's ex_data lock when
    orch ran inside a test process that dropped databases in a thread.  The
    CLI never has other threads when it forks (status threads are joined),
    so it keeps fork's speed; a program embedding orch with threads alive
    gets fresh interpreters instead, which are slower to start but safe.
    """
    import threading

    return "fork" if threading.active_count() == 1 else "spawn"


#: The most databases migrated at once, whatever ``--jobs`` or ``settings.jobs`` say.
#: Each one running holds its own server connections: ``--jobs 10000`` over 150
#: PostgreSQL databases opened 150 at once and 40 failed with "too many clients"
#: (PostgreSQL's default max_connections is 100, MySQL's 151).
MAX_JOBS = 32


def effective_jobs(registry: Registry, jobs: int | None, n: int) -> tuple[int, str | None]:
    """How many databases of a run of *n* migrate at once, and a note when that was capped.

    No more workers than databases, never more than :data:`MAX_JOBS`; the note
    (for stderr) says so when the asked number was above it.
    """
    wanted = jobs or default_jobs(registry, n)
    note = None
    if wanted > MAX_JOBS:
        source = "--jobs" if jobs else "settings.jobs"
        note = (
            f"{source} {wanted} capped at {MAX_JOBS}: each database running holds its own "
            "server connections"
        )
    return max(1, min(wanted, MAX_JOBS, n)), note


def default_jobs(registry: Registry, n: int) -> int:
    if registry.settings.jobs:
        return registry.settings.jobs
    return max(1, min(n, (os.cpu_count() or 2) * 2, 8))


def execute(
    registry: Registry,
    plan: Plan,
    targets: dict[str, Target],
    *,
    jobs: int | None = None,
    lock_timeout: float | None = None,
    fail_fast: bool = False,
    on_result: Callable[[DbResult], None] | None = None,
    on_step: Callable[[DbResult], None] | None = None,
    run_id: str | None = None,
    purpose: str = "",
    check_deps: bool = False,
    check_requirements: bool | None = None,
    scope: str | None = None,
    settled: Mapping[str, DbResult] | None = None,
) -> list[DbResult]:
    """Run every step of *plan* in dependency order; results in plan order.

    A stop requested through :mod:`orch.stopping` (the CLI's SIGINT/SIGTERM
    handling) lets running databases finish their revision in flight and
    starts nothing new.  *run_id* groups the audit rows of a run and its
    rollback; *scope*, what the run selected, is written in each of them.
    *settled*: databases whose result is known before the run (a staged
    rollout's tenants read at head): each is finished with it when the
    scheduler reaches it (its group started, its dependencies done), with no
    worker, connection or lock.
    *check_deps* checks the dependency rule again under each database's lock
    (see :func:`_dependency_rule`); the CLI passes it unless
    ``--ignore-deps``/``--force``.  *on_result* gets each database's result
    once its last step has ended (all its steps merged); *on_step* each step's
    as it ends, for progress in the order things happen.
    """
    from orch.store.audit import git_commit

    run_id = run_id or str(uuid.uuid4())
    timeout = registry.settings.lock_timeout if lock_timeout is None else lock_timeout
    # keyed by step: a database has several steps in an interleaved plan (PlanStep.key)
    steps = {s.key: s for s in plan.steps}
    if any(s.after is not None for s in plan.steps):
        preds = {s.key: set(s.after or ()) for s in plan.steps}
    else:
        preds = edges(registry, steps, reverse=plan.direction == "downgrade")
    secrets = REDACTOR.secrets()
    commit = git_commit(registry.root)
    stamp = timestamp()
    reqs = _requirements(
        registry, plan, check_deps if check_requirements is None else check_requirements
    )
    tasks = {
        key: Task(
            registry,
            targets[step.db],
            step,
            run_id,
            timeout,
            secrets,
            commit,
            stamp,
            purpose,
            _guard(registry, targets, step) if check_deps else (),
            *_peers(reqs, targets, step.db),
            scope=scope,
        )
        for key, step in steps.items()
    }
    n_jobs, _note = effective_jobs(registry, jobs, len(plan.names))
    results: dict[str, DbResult] = {}
    order = [s.key for s in plan.steps]
    pending = dict.fromkeys(order)  # not finished yet, in plan order
    keys_of: dict[str, list[str]] = {}  # each database's steps, in plan order
    for k in order:
        keys_of.setdefault(steps[k].db, []).append(k)
    one_step_each = len(steps) == len(plan.names)
    stop = False
    why_stop = "--fail-fast: an earlier database failed"
    running: set[str] = set()  # the steps in the workers' hands

    # a fleet's staged rollout (databases.<fleet>.rollout): groups in order, each with
    # its parallelism and failure budget; None when no tenant of the run has one
    rollout = Rollout.of_run(registry, plan.names) if purpose != "rollback" else None

    def skipped(key: str, why: str) -> DbResult:
        """Never touched: from/to are the revisions read before the run (no lock taken)."""
        current = steps[key].current
        seen = list(current) if current is not None else None
        return DbResult(
            steps[key].db, plan.direction, Outcome.SKIPPED, start=seen, end=seen, error=why
        )

    def finish(key: str, r: DbResult) -> None:
        nonlocal stop, why_stop
        results[key] = r
        if rollout is not None:
            over = rollout.finished(r.name, r.outcome)
            if over and not stop:
                stop, why_stop = True, over
        if on_step is not None:  # each step as it ends (a database may have several)
            on_step(r)
        pending.pop(key, None)
        if on_result is not None:
            if one_step_each:
                on_result(r)
            elif all(k in results for k in keys_of[r.name]):  # its last step: reported once
                on_result(_merged(r.name, [results[k] for k in keys_of[r.name]]))
        if r.outcome.blocking:
            for other in list(pending):
                if other in pending and key in _closure(other, preds):
                    finish(other, skipped(other, f"{r.name} {r.outcome}"))

    def ready(limit: int | None = None) -> list[str]:
        """The steps that may start now, in plan order (the first *limit* of them).

        Linear in what is left, and stops at *limit*, instead of a scan of
        the whole run: a fleet of 1,000 tenants asks this after every result
        (the scan was a tenth of a second of the parent's CPU per result).
        """
        done = results.keys()  # a set view: no copy per database (fleets of hundreds)
        busy = {steps[r].db for r in running}  # one worker per database
        found: list[str] = []
        for k in pending:
            if (
                k not in running
                and steps[k].db not in busy
                and (not preds[k] or preds[k] <= done)
                and (rollout is None or rollout.may_start(steps[k].db))
            ):
                found.append(k)
                if limit is not None and len(found) >= limit:
                    break
        return found

    pool: _Pool | None = None
    if n_jobs > 1 and len(plan.names) > 1:
        method = start_method()
        if method == "fork":
            from orch.alembic_bridge.runner import preload

            preload(registry, [targets[n].db for n in plan.names])  # once, then fork
            _FORKED_TASKS.clear()
            _FORKED_TASKS.update(tasks)  # inherited by the workers: only names cross the pipe
        pool = _Pool(method)
        if stopping.CURRENT is not None:
            stopping.CURRENT.worker_pids = pool.pids
    known = settled or {}
    try:
        while len(results) < len(tasks):
            # with a pool and nothing to skip, only as many as there are free workers
            free = None if pool is None or stop or stopping.requested() else n_jobs - len(running)
            again = False  # a step finished without a worker: more may be ready at once
            for key in ready(free) if free is None or free > 0 else ():
                name = steps[key].db
                if stopping.requested():
                    error = f"{stopping.reason()}: not started"
                    finish(key, DbResult(name, plan.direction, Outcome.SKIPPED, error=error))
                    continue
                if stop:
                    finish(key, skipped(key, why_stop))
                    continue
                if rollout is not None and not rollout.may_start(name):
                    continue  # its group's parallel is taken: after the next result
                if name in known and key == name:  # read at head before the run
                    if rollout is not None:
                        rollout.started(name)
                    finish(key, known[name])
                    again = True
                    continue
                if pool is None:
                    if rollout is not None:
                        rollout.started(name)
                    r = run_one(tasks[key])
                    finish(key, r)
                    stop = stop or (fail_fast and r.outcome.blocking)
                    continue
                if len(running) >= n_jobs:
                    break  # submit only what can start now, so --fail-fast holds the rest
                try:
                    pool.submit(key, tasks[key])
                    running.add(key)
                    if rollout is not None:
                        rollout.started(name)
                except OSError as exc:  # no process could be started (memory, pid limit)
                    error = f"could not start a worker process: {exc}"
                    finish(key, DbResult(name, plan.direction, Outcome.FAILED, error=error))
                    stop = stop or fail_fast
            if not running or again:
                if not running and len(results) < len(tasks) and not ready():
                    raise RuntimeError("scheduler stalled")  # pragma: no cover
                continue
            assert pool is not None
            for key, got, death in pool.wait():
                running.discard(key)
                # None: the worker died with the database in its hands
                r = got if got is not None else _died(tasks[key], *death)
                finish(key, r)
                stop = stop or (fail_fast and r.outcome.blocking)
    finally:
        from orch.store.aio import close_kept

        close_kept()  # inline runs' kept tenant connections (workers close their own)
        if pool is not None:
            pool.close()
            if stopping.CURRENT is not None:
                stopping.CURRENT.worker_pids = list
            _FORKED_TASKS.clear()
    merged = {name: _merged(name, [results[k] for k in keys_of[name]]) for name in plan.names}
    firsts = {s.db: s for s in reversed(plan.steps)}
    _read_untouched(registry, targets, firsts, merged)
    return [merged[n] for n in plan.names]


def _settles_itself(task: Task) -> bool:
    """A tenant database's upgrade the plan did not read (see :func:`_settle`).

    The plan reads no tenant database first: a second connection to each
    (the server starts a process and loads that database's catalog) cost
    more than its migration.  Its worker reads it under the lock instead.
    """
    db, step = task.target.db, task.step
    return (
        step.direction == Direction.UPGRADE
        and not task.purpose
        and db.fleet is not None
        and db.schema is None
        and step.current is None
        and not step.announced
        and step.after is None
        and not step.refined
    )


def _requirements(registry: Registry, plan: Plan, check: bool) -> list[Requirement]:
    """The requirements across databases to check under the locks (none unless the plan
    was cut at revision level: only then do they replace the database-level rule)."""
    if not check or not any(s.refined for s in plan.steps):
        return []

    return requirements(graphs_for(registry), [*registry.databases, *registry.left_out])


def _peers(
    reqs: Sequence[Requirement], targets: dict[str, Target], name: str
) -> tuple[tuple[Requirement, ...], tuple[Target, ...]]:
    """The requirements naming *name* and the (configured) databases they relate it to."""
    mine = tuple(r for r in reqs if name in (r.db, r.on_db))
    others = dict.fromkeys(r.on_db if r.db == name else r.db for r in mine)
    return mine, tuple(targets[o] for o in others if o in targets and targets[o].url)


def _merged(name: str, parts: Sequence[DbResult]) -> DbResult:
    """One database's result from its steps' results (one step: that result itself).

    From is where its first step found it, to where its last step that ran
    left it; the outcome is the first that is not ``done``/``unchanged``, else
    ``done`` if any step changed something.
    """
    parts = [p for p in parts if p.name == name]
    if len(parts) == 1:
        return parts[0]
    if not parts:  # pragma: no cover
        raise RuntimeError(f"no result for {name}")
    bad = [p for p in parts if not p.outcome.ok]
    first_bad = bad[0] if bad else None
    ran = [p for p in parts if p.outcome != Outcome.SKIPPED] or parts
    out = DbResult(name, parts[0].direction, Outcome.UNCHANGED)
    if first_bad is not None:
        # steps after a failed one are skipped because of it: the failure is the outcome
        out.outcome = first_bad.outcome
        out.error, out.revision = first_bad.error, first_bad.revision
    elif any(p.outcome == Outcome.DONE for p in parts):
        out.outcome = Outcome.DONE
    out.start = parts[0].start
    out.end = ran[-1].end
    for p in parts:
        out.applied.extend(p.applied)
        out.lines.extend(p.lines)
        out.warnings.extend(w for w in p.warnings if w not in out.warnings)
        out.duration += p.duration
        out.dirty = out.dirty or p.dirty
    return out


def _guard(registry: Registry, targets: dict[str, Target], step: PlanStep) -> tuple[Target, ...]:
    """What :func:`_dependency_rule` checks for *step*, in lock order.

    An upgrade's dependencies, a downgrade's dependents (transitively, as
    the plan does).  A database the environment has no URL for is not part
    of it and counts as satisfied.
    """

    if step.direction == "upgrade":
        names = registry.dependencies(step.db)
    elif step.direction == "downgrade":
        names = registry.dependents(step.db)
    else:
        return ()
    # requirements across databases replace the database-level rule between those
    names = [n for n in names if n not in step.refined]
    return tuple(targets[n] for n in lock_order(registry, names) if n in targets and targets[n].url)


def _read_untouched(
    registry: Registry,
    targets: dict[str, Target],
    steps: dict[str, PlanStep],
    results: dict[str, DbResult],
) -> None:
    """Where skipped databases stand, when the plan was made without reading them.

    ``upgrade --all`` plans without connecting (see the CLI's
    ``_upgrade_plan``); a database skipped because a dependency failed (or
    the run stopped) was then never read.  Its summary still says where it
    is: read it now, only in that case.
    """
    unread = [
        n
        for n, r in results.items()
        if r.outcome == Outcome.SKIPPED and r.start is None and steps[n].current is None
    ]
    if not unread:
        return
    import concurrent.futures

    def current(name: str) -> tuple[str, ...] | None:
        if targets[name].url is None:
            return None
        try:
            return read_live(targets[name], registry)[0]
        except Exception:  # noqa: BLE001  unreadable: the summary leaves it unknown
            return None

    with concurrent.futures.ThreadPoolExecutor(min(16, len(unread))) as pool:
        for name, cur in zip(unread, pool.map(current, unread), strict=True):
            if cur is not None:
                results[name].start = results[name].end = list(cur)


# The tasks of the run in progress, set before the pool forks its workers: a
# worker finds its task here by name.  A Task carries the whole registry (30 kB
# for 200 databases), which would otherwise be pickled through a pipe for
# every database.
_FORKED_TASKS: dict[str, Task] = {}

#: in a worker process: its end of the pipe to the parent (None inline)
_TO_PARENT: Any = None


def _progress(kind: str, value: Any) -> None:
    """Tell the parent how far the database in hand got (nothing to do inline).

    Notes: ``start`` (the revisions read under the lock), ``revision`` (one
    is about to run) and ``applied`` (one committed).  The parent keeps the
    notes of each busy worker; if the worker dies, they still say where its
    database started and which revision was in flight (see :func:`_died`).
    Data written to a pipe outlives its writer, so a note sent is a note
    received.
    """
    if _TO_PARENT is not None:
        with contextlib.suppress(OSError, ValueError):
            _TO_PARENT.send(("note", kind, value))


def _worker_main(conn: Any, notes: Any, parent: int) -> None:
    """A worker's life: migrate the databases the parent sends, one at a time.

    Results go back on *conn*, the pipe the jobs come on; notes (see
    :func:`_progress`) on *notes*, a pipe of their own that the parent reads
    when it wakes for a result or a death, not once per note: three notes
    per tenant were three more wake-ups of the parent per tenant, on a
    machine whose CPUs the workers and the server need.
    """
    global _TO_PARENT
    _worker_init(parent)
    _TO_PARENT = notes

    try:
        _serve(conn)
    finally:
        close_kept()  # tenant connections kept between databases (see run_on_connection)


def _serve(conn: Any) -> None:
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if job is None:
            return
        task = _FORKED_TASKS[job] if isinstance(job, str) else job
        try:
            result = run_one(task)
        except Exception as exc:  # run_one turns failures into results: this is a bug
            from orch.store.db import describe_error

            error = f"worker: {describe_error(exc)}"
            result = DbResult(task.target.name, task.step.direction, Outcome.FAILED, error=error)
        conn.send(("result", result))


@dataclass(eq=False)  # hashed by identity (a key of wait()'s handles)
class _Worker:
    process: Any  # multiprocessing.Process
    conn: Any  # the parent's end of this worker's pipe (jobs out, results in)
    notes_conn: Any  # the parent's end of its notes' pipe (see _worker_main)
    name: str | None = None  # the database in its hands
    notes: dict[str, Any] = field(default_factory=dict)


#: how often (seconds) a waiting parent empties the workers' notes pipes, so that a
#: worker with many notes (a long history) never blocks on a full pipe
_NOTES_EVERY = 0.25


class _Pool:
    """Worker processes, one database each at a time, that survive each other's deaths.

    ``concurrent.futures.ProcessPoolExecutor`` declares itself broken when
    any worker dies and fails every pending future: one SIGKILLed (or
    OOM-killed) worker had every other database of the run reported
    ``failed`` although they went on migrating to head.  Here each worker has
    a pipe of its own, so the parent knows which database a dead worker held
    and what it had noted about it; only that database fails, and the next
    database gets a fresh worker.  Workers are started on demand (at most
    ``--jobs`` busy at once) and reused: Alembic and the drivers are
    imported once per worker, not once per database.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self.ctx: Any = multiprocessing.get_context(method)
        self.workers: list[_Worker] = []

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process.pid is not None]

    def submit(self, name: str, task: Task) -> None:
        """Hand *name* to an idle worker, or to a new one.

        An idle worker may have died unnoticed (only busy ones are watched):
        its pipe is broken, so it is dropped and the next one tried.  OSError
        from starting a process (memory, pid limit) reaches the caller.
        """
        job = name if self.method == "fork" else task  # spawned: nothing inherited
        for worker in [w for w in self.workers if w.name is None]:
            try:
                worker.conn.send(job)
            except OSError:
                worker.process.join(5)
                self._drop(worker)
                continue
            worker.name, worker.notes = name, {}
            return
        worker = self._start()
        worker.conn.send(job)
        worker.name, worker.notes = name, {}

    def _start(self) -> _Worker:
        mine, theirs = self.ctx.Pipe()
        notes_in, notes_out = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=_worker_main, args=(theirs, notes_out, os.getpid()), name="orch-worker"
        )
        proc.start()
        theirs.close()
        notes_out.close()
        worker = _Worker(proc, mine, notes_in)
        self.workers.append(worker)
        return worker

    def wait(self) -> list[tuple[str, DbResult | None, tuple[dict[str, Any], int | None]]]:
        """Block until busy workers report: (database, result, (notes, exit code)).

        The result is None when the worker died with the database in its
        hands; its notes and exit code then say what is known.
        """
        from multiprocessing.connection import wait

        handles: dict[Any, _Worker] = {}
        for w in self.workers:
            if w.name is not None:
                handles[w.conn] = w
                handles[w.process.sentinel] = w
        out: list[tuple[str, DbResult | None, tuple[dict[str, Any], int | None]]] = []
        ready: list[Any] = []
        while not ready:
            ready = wait(list(handles), timeout=_NOTES_EVERY)
            for w in dict.fromkeys(handles.values()):  # a full notes pipe would block its writer
                self._notes(w)
        for w in dict.fromkeys(handles[h] for h in ready):
            name = w.name
            assert name is not None
            result, dead = self._read(w)
            if result is not None:
                w.name = None
                out.append((name, result, ({}, None)))
            elif dead or not w.process.is_alive():
                w.process.join(5)
                out.append((name, None, (w.notes, w.process.exitcode)))
                self._drop(w)
        return out

    def _read(self, w: _Worker) -> tuple[DbResult | None, bool]:
        """The worker's result if it came, and whether its pipe broke.

        Its notes are read first: a worker writes them before its result, and
        data written to a pipe outlives its writer, so a dead worker's notes
        are all there.
        """
        self._notes(w)
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "result":
                    return msg[1], False
        except (EOFError, OSError):
            return None, True
        return None, False

    @staticmethod
    def _notes(w: _Worker) -> None:
        """Take in every note the worker has written so far (never blocks)."""
        try:
            while w.notes_conn.poll():
                _, kind, value = w.notes_conn.recv()
                if kind == "applied":
                    w.notes.setdefault("applied", []).append(value)
                else:
                    w.notes[kind] = value
        except (EOFError, OSError):
            return

    def _drop(self, w: _Worker) -> None:
        self.workers.remove(w)
        with contextlib.suppress(OSError):
            w.conn.close()
        with contextlib.suppress(OSError):
            w.notes_conn.close()

    def close(self) -> None:
        """Stop every worker once the ones busy have finished (their results are not needed)."""
        for w in self.workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in list(self.workers):
            w.process.join()
            self._drop(w)


def _died(task: Task, notes: dict[str, Any], exitcode: int | None) -> DbResult:
    """The result of a database whose worker died in its hands, read from the database.

    The worker's own result died with it.  Its notes say where the database
    started (read under its lock), which revisions committed and which one
    was in flight; the database itself says where it is now.  A revision in
    flight rolls back on PostgreSQL and SQLite (with the dead session).  On
    MySQL/MariaDB its audit row still says ``running``: the database is
    dirty, as after any revision interrupted half-way, and the next run
    refuses it until it is repaired and stamped.  The dead worker's lock died
    with its connection (MySQL/MariaDB keep a statement in flight running to
    its end first; then the lock goes).
    """
    import signal

    from orch.store.db import describe_error

    db = task.target.db
    if exitcode is not None and exitcode < 0:
        try:
            how = f"signal {-exitcode}, {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit status {exitcode}"
    res = DbResult(db.name, task.step.direction, Outcome.FAILED)
    res.start = notes.get("start")
    res.applied = list(notes.get("applied", ()))
    rev = notes.get("revision")
    in_flight = rev if rev is not None and rev not in res.applied else None
    error = f"worker process died ({how})"
    try:
        current, locked, dirty = read_live(task.target, task.registry)
    except Exception as exc:
        res.end = None
        res.revision = in_flight
        res.error = f"{error}; where it stands could not be read: {describe_error(exc)}"
        return res
    res.end = list(current)
    if res.start is None:  # died before it read the database: nothing of this run began
        res.start = res.end
    if in_flight is not None and (in_flight in current) == (task.step.direction == "upgrade"):
        res.applied.append(in_flight)  # it committed; the worker died before noting it
        in_flight = None
    res.revision = in_flight
    if dirty is not None:
        res.dirty, res.revision = True, dirty[0]
        error += (
            f" during revision {dirty[0]}; the database is dirty (this backend cannot roll "
            f"DDL back): {repair_hint(db.name, dirty[0])}"
        )
    elif in_flight is not None:
        error += f" during revision {in_flight}, which is rolled back"
    elif res.applied:
        error += f" after {len(res.applied)} revision(s), before the next one started"
    else:
        error += " before it changed anything"
    if locked:
        error += "; its server session still holds the lock until its statement ends"
    res.error = redact(error)
    return res


def _closure(name: str, preds: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(preds.get(name, ()))
    while stack:
        cur = stack.pop()
        if cur not in seen:
            seen.add(cur)
            stack.extend(preds.get(cur, ()))
    return seen


def exit_code(results: Sequence[DbResult]) -> int:
    """The run's exit code (docs/guide/commands.md, exit codes).

    0 when every database is ``done``/``unchanged``; 3 when the only problem
    is lock timeouts (their dependents ``skipped``); 2 when the only problem
    is a refusal found under the lock that is not about a dirty database (a
    relative target no longer valid, nothing touched); otherwise 1.  A
    database refused because it is *dirty* counts as failed (exit 1): it is
    the lasting result of a failure, and a run that migrated others
    around it did run.
    """
    bad = [r for r in results if not r.outcome.ok and r.outcome != Outcome.SKIPPED]
    if not bad and all(r.outcome.ok for r in results):
        return EXIT_OK
    if not bad:
        return EXIT_FAILED  # pragma: no cover  (skipped always has a cause)
    if all(r.outcome == Outcome.LOCKED for r in bad):
        return EXIT_LOCKED
    if all(r.outcome == Outcome.REFUSED and not r.dirty for r in bad):
        return EXIT_USAGE
    return EXIT_FAILED
