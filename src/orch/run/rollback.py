"""``--on-failure rollback``: undo what a failed run changed, in reverse order.

Databases that belong together are often only consistent at matching
revisions (analytics' new columns read core's new table).  When one of them
fails, the default (``stop``) leaves each database at its last good
revision: safe per database, but the set may be mixed.  ``rollback``
returns every database this run changed (applied at least one revision:
``done`` ones, and ``failed`` ones that got part of the way) to the
revisions it started from, in the reverse of the run's order, under the
same locks, hooks and audit rules as any run, in the same audit run:

- a failed ``upgrade`` is undone by a downgrade, dependents first, to the
  revision each database started at;
- a failed ``downgrade`` is undone by an upgrade, dependencies first, to
  exactly the revisions each database had (several heads included).  An
  incident downgrade commits revision by revision, so one that fails
  half-way leaves databases at their last good revision, not where they
  were; this brings them back.

Outcomes are not rewritten.  A database's run outcome stays what happened
(``done``, ``failed``, ...) and the rollback is reported beside it, in a
``rollback`` entry with the same vocabulary (``done``, ``unchanged``,
``failed``, ``skipped``, ``locked``, ``refused``).  So ``done`` keeps
meaning "this run's step succeeded", and a rollback that did not work is
impossible to miss: a dirty MySQL database is ``refused``, a revision whose
downgrade raises is ``failed``, and the databases after it in the
rollback's order are ``skipped`` (downgrading a dependency under a
dependent that did not move back would break the dependent; upgrading a
dependent over a dependency that did not would too).  Positions are not
left stale either: the database's ``end`` becomes where the rollback left
it (see :func:`entry`), so a rollback that stopped half-way shows the
revision it stopped at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orch.config.revisions import requirements
from orch.errors import OrchError
from orch.outcomes import Direction, Outcome
from orch.planning.live import graphs_for
from orch.planning.plan import Plan, PlanStep, interleave, levels, refined_pairs
from orch.planning.resolve import resolve_target

if TYPE_CHECKING:
    from orch.config.registry import Registry
    from orch.run.execute import DbResult


def wanted(results: Sequence[DbResult], interrupted: bool) -> bool:
    """A rollback is due when the run did not end well (including an interrupted run)."""
    return interrupted or any(not r.outcome.ok for r in results)


def changed(results: Sequence[DbResult]) -> list[DbResult]:
    """Databases this run moved: at least one revision applied."""
    return [r for r in results if r.applied]


def plan(
    registry: Registry, results: Sequence[DbResult], direction: str = Direction.UPGRADE
) -> tuple[Plan, dict[str, tuple[Outcome, str]]]:
    """The plan back to each changed database's start, and the ones it cannot return.

    *direction* is the failed run's: an upgrade is undone by a downgrade
    (dependents first), a downgrade by an upgrade (dependencies first).  A
    database that started at several heads has no single downgrade target,
    but an upgrade can go back up to all of them (the target names each,
    comma-separated).  One whose start is unknown cannot be returned to it.
    What cannot be undone is reported, not guessed: each such database maps
    to ``("refused", why)``, and the databases around it whose rollback would
    break ``depends_on`` to ``("skipped", why)``.
    """
    undo = Direction.UPGRADE if direction == Direction.DOWNGRADE else Direction.DOWNGRADE
    targets: dict[str, str] = {}
    cannot: dict[str, str] = {}
    for r in changed(results):
        if r.start is None:
            cannot[r.name] = "its starting revision is unknown; roll it back by hand"
        elif undo == "upgrade":
            targets[r.name] = ",".join(r.start)  # changed: it started above base
        elif len(r.start) > 1:
            cannot[r.name] = (
                f"it started at several heads ({', '.join(r.start)}); "
                "roll it back by hand with 'orch downgrade'"
            )
        else:
            targets[r.name] = r.start[0] if r.start else "base"
    for name, why in _not_back_to_start(registry, results, targets, undo).items():
        del targets[name]
        cannot[name] = why
    held = _held_by(registry, targets, cannot, undo)
    for name in held:
        del targets[name]
    # where the run left each database: a rollback step that never starts reports it
    left = {r.name: tuple(r.end) if r.end is not None else None for r in results}
    steps: list[PlanStep] = []
    for level, names in enumerate(levels(registry, targets, reverse=undo == "downgrade")):
        for name in names:
            steps.append(PlanStep(name, undo, targets[name], level, left[name]))
    unreturned = {n: (Outcome.REFUSED, why) for n, why in cannot.items()}
    unreturned.update({n: (Outcome.SKIPPED, why) for n, why in held.items()})
    return _interleaved(registry, Plan(undo, tuple(steps))), unreturned


def _interleaved(registry: Registry, undo: Plan) -> Plan:
    """*undo* in an order every requirement across databases (``orch_requires``) allows.

    The rollback of an interleaved run must be interleaved too: undoing an
    A-B-A upgrade takes core's later revision down before the analytics
    revision it requires.  Each step is resolved from where the run left its
    database (the executor resolves it again under the lock) and the plan cut
    at revision level as the run's was (:func:`orch.planning.plan.interleave`).
    A plan whose starting points are not all known, or with no requirement
    between its databases, is returned as it is (database-level order).
    """
    import dataclasses

    if any(s.current is None for s in undo.steps) or len(undo.steps) < 2:
        return undo
    every = graphs_for(registry)

    reqs = requirements(every, [*registry.databases, *registry.left_out])
    names = set(undo.names)
    if not any(len(p & names) == 2 for p in refined_pairs(reqs)):
        return undo
    try:
        steps = tuple(
            dataclasses.replace(
                s,
                resolved=resolve_target(every[s.db], s.current or (), s.target, s.direction),
            )
            for s in undo.steps
        )
        return interleave(registry, Plan(undo.direction, steps), every, reqs)
    except OrchError:  # the executor refuses such a step under the lock, naming why
        return undo


def _held_by(
    registry: Registry, targets: dict[str, str], cannot: dict[str, str], undo: str
) -> dict[str, str]:
    """Databases whose rollback would break ``depends_on`` around one that cannot roll back.

    Undoing an upgrade goes dependents first: a dependency must not move back
    under a dependent that stays where the run left it (its new revisions may
    read the dependency's new tables).  Undoing a downgrade goes dependencies
    first: a dependent must not move back up over a dependency that stayed
    down.  Such a database is not rolled back either, and says whose rollback
    held it.
    """
    out: dict[str, str] = {}
    for stuck in cannot:
        around = registry.dependencies(stuck) if undo == "downgrade" else registry.dependents(stuck)
        for name in around:
            if name in targets and name not in out:
                relation = "dependent" if undo == "downgrade" else "dependency"
                out[name] = (
                    f"its {relation} {stuck} cannot be rolled back, and rolling "
                    f"{name} back alone would break depends_on; roll both back by hand"
                )
    return out


def _not_back_to_start(
    registry: Registry, results: Sequence[DbResult], targets: dict[str, str], undo: str
) -> dict[str, str]:
    """Databases whose *undo* (downgrade or upgrade) to their start would not end exactly there.

    On a branched history Alembic's downgrade to one side of a merge undoes
    the merge only: after an upgrade from b1 that applied c1, m1 and d1,
    ``downgrade b1`` leaves b1 *and* c1.  The rollback's steps are Alembic's
    (the same resolver the run uses), so this is known before anything is
    undone: such a database is reported, not half rolled back.
    """

    by_name = {r.name: r for r in results}
    graphs = graphs_for(registry, list(targets))
    out: dict[str, str] = {}
    for name, target in targets.items():
        r = by_name[name]
        if r.end is None or r.start is None:
            continue  # where it ended is unknown: the executor resolves under the lock
        try:
            resolved = resolve_target(graphs[name], tuple(r.end), target, undo)
        except OrchError as exc:
            out[name] = f"{exc}; roll it back by hand"
            continue
        if sorted(resolved.target) != sorted(r.start):
            out[name] = (
                f"Alembic's {undo} to {target} from {', '.join(r.end)} would run "
                f"{', '.join(resolved.path)} and leave {', '.join(resolved.target) or 'base'}, "
                f"not {', '.join(r.start) or 'base'}; roll it back by hand with 'orch {undo}'"
            )
    return out


def entry(r: DbResult, left_at: list[str] | None) -> dict[str, Any]:
    """A rollback result as the ``rollback`` entry of the database it undoes.

    ``from`` is where the run left the database, ``to`` where it is after
    the rollback attempt: a rollback that failed half-way, was refused or
    never started must not leave the reader believing the database is still
    wherever the run put it, or already back at its start.  A rollback that
    read nothing (locked, skipped, unreachable) changed nothing, so both are
    *left_at*.  A rollback whose connection broke after it undid revisions
    ends unknown (``None``), as any run does.
    """
    start = r.start if r.start is not None else left_at
    end = r.end if r.end is not None or r.applied else start
    return {
        "outcome": r.outcome,
        "from": start,
        "to": end,
        "applied": r.applied,
        "revision": r.revision,
        "error": r.error,
        "duration": round(r.duration, 3),
    }


def refused(r: DbResult, why: str, outcome: Outcome = Outcome.REFUSED) -> dict[str, Any]:
    """The ``rollback`` entry of a database the rollback does not return (nothing was run)."""
    return {
        "outcome": outcome,
        "from": r.end,
        "to": r.end,
        "applied": [],
        "revision": None,
        "error": why,
        "duration": 0.0,
    }


def detail(rb: dict[str, Any] | None) -> str:
    """Why a rollback did not return its database (the summary's DETAIL); '' when it did."""
    if rb is None or rb["outcome"] in ("done", "unchanged"):
        return ""
    at = f" at {rb['revision']}" if rb.get("revision") else ""
    return f"rollback {rb['outcome']}{at}: {rb.get('error') or 'no detail'}"
