"""Runs a :class:`~orch.plan.Plan`: locks, one transaction per revision, order, workers.

Per database (:func:`run_one`): connect, take the migration lock, read the
live revision *under the lock*, resolve the target, then apply revision by
revision through Alembic with an audit row per step.  Failures become
results, never exceptions crossing processes.

Across databases (:func:`execute`): a ready-set scheduler over the
dependency graph.  Alembic keeps module-global state, so parallel databases
run in forked worker processes (Alembic imported once in the parent before
the fork); ``jobs=1`` runs the same code inline.  A failed, locked or
refused database marks everything downstream ``skipped``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orch.errors import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, OrchError
from orch.plan import Plan, PlanStep, edges
from orch.redact import REDACTOR, redact
from orch.registry import Registry, Target

OUTCOMES = ("done", "unchanged", "failed", "skipped", "locked", "refused")
BAD = ("failed", "locked", "refused", "skipped")


@dataclass
class DbResult:
    """What happened to one database (the summary row and the JSON entry)."""

    name: str
    direction: str
    outcome: str
    start: list[str] | None = None
    end: list[str] | None = None
    applied: list[str] = field(default_factory=list)
    revision: str | None = None  # the revision that failed
    error: str | None = None
    duration: float = 0.0
    lines: list[str] = field(default_factory=list)

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
            "duration": round(self.duration, 3),
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


def _destination(resolved_target: tuple[str, ...], label: str, direction: str) -> str:
    if not resolved_target:
        return "base"
    if len(resolved_target) == 1:
        return resolved_target[0]
    return "heads" if direction != "downgrade" else resolved_target[0]


def _step_revision(step: Any) -> str:
    rev = getattr(step, "revision", None)
    if rev is not None and hasattr(rev, "revision"):
        return str(rev.revision)
    to = getattr(step, "to_", ()) or ()
    return ",".join(to) or "base"


def run_one(task: Task) -> DbResult:
    """Migrate one database.  Never raises for database problems: returns a result."""
    from orch.audit import AuditLog, dirty_revision
    from orch.db import (
        check_version_schema,
        connect,
        describe_error,
        read_current,
        transactional_ddl,
    )
    from orch.errors import DatabaseError
    from orch.locks import LockTimeout, MigrationLock
    from orch.revisions import load_graph, resolve_target

    for s in task.secrets:
        REDACTOR.add(s)
    t0 = time.monotonic()
    db = task.target.db
    direction = task.step.direction
    res = DbResult(db.name, direction, "failed")
    url = task.target.url
    if url is None:
        res.outcome, res.error = "refused", task.target.missing
        return res

    def say(line: str) -> None:
        res.lines.append(redact(line))

    try:
        conn = connect(url, task.registry.settings.connect_timeout)
    except DatabaseError as exc:
        res.error = f"unreachable: {exc}"
        res.duration = time.monotonic() - t0
        return res
    try:
        _session_setup(conn, url, task.registry)
        check_version_schema(conn, db)
        conn.rollback()
        lock = MigrationLock(conn, db, url, task.lock_timeout, on_wait=say)
        try:
            lock.acquire()
        except LockTimeout as exc:
            res.outcome, res.error = "locked", str(exc)
            return res
        try:
            audit = AuditLog(
                conn,
                task.registry.settings.log_table,
                db.version_table_schema,
                task.run_id,
                db.name,
                task.target.env,
            )
            audit.ensure()
            conn.commit()
            current = read_current(conn, db)
            res.start = list(current)
            dirty = None
            if not transactional_ddl(url):
                dirty = dirty_revision(
                    conn, task.registry.settings.log_table, db.version_table_schema, db.name
                )
            conn.commit()
            if dirty is not None and direction != "stamp":
                rev, _err = dirty
                res.outcome = "refused"
                res.revision = rev
                res.error = (
                    f"dirty: revision {rev} failed or was interrupted half-way and this backend "
                    f"cannot roll DDL back. Repair the schema by hand (finish or undo {rev}), "
                    f"then 'orch stamp {db.name}@<revision it is really at>'"
                )
                res.end = list(current)
                return res
            graph = load_graph(db.versions, db.name)
            try:
                resolved = resolve_target(graph, current, task.step.target, direction)
            except OrchError as exc:
                res.outcome, res.error = "refused", str(exc)
                res.end = list(current)
                return res
            if direction == "stamp":
                _stamp(task, conn, audit, resolved.target, resolved.label, current, res, say)
            elif not resolved.path:
                res.outcome = "unchanged"
                say(f"{db.name}: already at {', '.join(current) or 'base'}")
            else:
                _migrate(task, conn, audit, resolved, res, say, transactional_ddl(url))
            conn.rollback()
            res.end = list(read_current(conn, db))
            conn.commit()
        finally:
            lock.release()
    except Exception as exc:  # a failure outside a revision (lock SQL, audit table, ...)
        res.outcome = "failed"
        res.error = res.error or describe_error(exc)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        res.duration = time.monotonic() - t0
    return res


def _session_setup(conn: Any, url: str, registry: Registry) -> None:
    """Per-session settings: end orphaned work promptly, fail fast behind DDL locks."""
    from sqlalchemy import text

    from orch.db import backend

    kind = backend(url)
    ddl = registry.settings.ddl_lock_timeout
    if kind == "postgresql":
        try:
            conn.execute(text("SET client_connection_check_interval = '1s'"))
            conn.commit()
        except Exception:  # PostgreSQL < 14
            conn.rollback()
        if ddl:
            conn.execute(text(f"SET lock_timeout = '{int(ddl * 1000)}ms'"))
            conn.commit()
    elif kind == "mysql" and ddl:
        conn.execute(text(f"SET SESSION lock_wait_timeout = {max(1, int(ddl))}"))
        conn.commit()


def _migrate(
    task: Task,
    conn: Any,
    audit: Any,
    resolved: Any,
    res: DbResult,
    say: Callable[[str], None],
    transactional: bool,
) -> None:
    from orch import alembic_run
    from orch.db import describe_error

    db = task.target.db
    direction = task.step.direction
    state: dict[str, Any] = {"row": None, "rev": None, "t": 0.0}
    say(
        f"{db.name}: {direction} {', '.join(res.start or []) or 'base'} -> "
        f"{resolved.label} ({len(resolved.path)} revision(s))"
    )

    def before_step(step: Any) -> None:
        rev = _step_revision(step)
        state["rev"] = rev
        state["t"] = time.monotonic()
        state["row"] = audit.start(rev, direction)
        if not transactional:
            conn.commit()  # the dirty marker must survive DDL that cannot roll back

    def on_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        audit.finish(state["row"], "ok")
        rev = state["rev"]
        res.applied.append(rev)
        say(f"  {rev} ok ({time.monotonic() - state['t']:.2f}s)")
        state["row"] = None

    destination = _destination(resolved.target, resolved.label, direction)
    try:
        alembic_run.run(
            task.registry,
            db,
            task.target.url or "",
            conn,
            direction,
            destination,
            before_step=before_step,
            on_apply=on_apply,
        )
        conn.commit()
        res.outcome = "done"
    except Exception as exc:
        error = describe_error(exc)
        with contextlib.suppress(Exception):
            conn.rollback()
        rev = state["rev"]
        res.outcome, res.revision, res.error = "failed", rev, error
        say(f"  {rev} FAILED: {error}")
        try:
            if state["row"] is not None and not transactional:
                audit.finish(state["row"], "failed", error=error)
            else:
                audit.record(rev, direction, "failed", error=error)
            conn.commit()
        except Exception:
            conn.rollback()


def _stamp(
    task: Task,
    conn: Any,
    audit: Any,
    target: tuple[str, ...],
    label: str,
    current: tuple[str, ...],
    res: DbResult,
    say: Callable[[str], None],
) -> None:
    from orch import alembic_run

    db = task.target.db
    destination = _destination(target, label, "stamp")
    alembic_run.run(task.registry, db, task.target.url or "", conn, "stamp", destination)
    conn.commit()
    audit.record(
        ",".join(target) or "base", "stamp", "ok", detail=f"from {','.join(current) or 'base'}"
    )
    conn.commit()
    res.outcome = "unchanged" if tuple(sorted(target)) == tuple(sorted(current)) else "done"
    say(f"{db.name}: stamped {', '.join(target) or 'base'}")


# ---------------------------------------------------------------- fleet


def _worker_init() -> None:
    """Die with the parent: a SIGKILLed orch must not leave migrations running."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # not Linux
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
) -> list[DbResult]:
    """Run every step of *plan* in dependency order; results in plan order."""
    run_id = str(uuid.uuid4())
    timeout = registry.settings.lock_timeout if lock_timeout is None else lock_timeout
    steps = {s.db: s for s in plan.steps}
    preds = edges(registry, steps, reverse=plan.direction == "downgrade")
    secrets = tuple(sorted(REDACTOR._secrets))
    tasks = {
        name: Task(registry, targets[name], step, run_id, timeout, secrets)
        for name, step in steps.items()
    }
    n_jobs = jobs or default_jobs(registry, len(tasks))
    results: dict[str, DbResult] = {}
    pending = {name: set(p) for name, p in preds.items()}
    order = [s.db for s in plan.steps]
    stop = False

    def finish(r: DbResult) -> None:
        results[r.name] = r
        if on_result is not None:
            on_result(r)

    def skip_downstream(name: str, why: str) -> None:
        for other in order:
            if other in results or other == name:
                continue
            if name in _closure(other, preds):
                finish(DbResult(other, plan.direction, "skipped", error=why))

    def ready() -> list[str]:
        return [
            n
            for n in order
            if n not in results and n not in busy and not (pending[n] - set(results))
        ]

    running: dict[Any, str] = {}  # future -> database
    busy: set[str] = set()  # databases submitted and not finished (never submit one twice)
    pool = None
    if n_jobs > 1 and len(tasks) > 1:
        from alembic.runtime import environment  # noqa: F401  import once, then fork
        from alembic.script import ScriptDirectory  # noqa: F401

        ctx = multiprocessing.get_context("fork")
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(n_jobs, len(tasks)), mp_context=ctx, initializer=_worker_init
        )
    try:
        while len(results) < len(tasks):
            for name in ready():
                if stop:
                    finish(
                        DbResult(
                            name,
                            plan.direction,
                            "skipped",
                            error="--fail-fast: an earlier database failed",
                        )
                    )
                    continue
                if pool is None:
                    r = run_one(tasks[name])
                    _after(r, finish, skip_downstream)
                    if r.outcome in BAD and fail_fast:
                        stop = True
                else:
                    running[pool.submit(run_one, tasks[name])] = name
                    busy.add(name)
            if not running:
                if len(results) < len(tasks) and not ready():
                    raise RuntimeError("scheduler stalled")  # pragma: no cover
                continue
            done, _ = concurrent.futures.wait(
                list(running), return_when=concurrent.futures.FIRST_COMPLETED
            )
            for fut in done:
                name = running.pop(fut)
                busy.discard(name)
                try:
                    r = fut.result()
                except Exception as exc:  # a worker died
                    r = DbResult(name, plan.direction, "failed", error=f"worker failed: {exc}")
                _after(r, finish, skip_downstream)
                if r.outcome in BAD and fail_fast:
                    stop = True
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [results[n] for n in order]


def _after(
    r: DbResult, finish: Callable[[DbResult], None], skip: Callable[[str, str], None]
) -> None:
    finish(r)
    if r.outcome in ("failed", "locked", "refused"):
        skip(r.name, f"{r.name} {r.outcome}")


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
    """0 all good; 3 when the only problem is lock timeouts; else 1 (refused: 2)."""
    outcomes = {r.outcome for r in results}
    if outcomes <= {"done", "unchanged"}:
        return EXIT_OK
    if outcomes - {"done", "unchanged", "skipped"} == {"locked"}:
        return EXIT_LOCKED
    if outcomes - {"done", "unchanged", "skipped"} == {"refused"}:
        return 2
    return EXIT_FAILED
