"""Targets to steps with Alembic's own resolver: what is announced is what runs.

``orch plan``, the ``--sql`` header, the protected prompt, rollback and the
executor all call :func:`resolve_target`, which asks the ScriptDirectory that
runs the migration (bound to the graph by :func:`orch.planning.live.graphs_for`)
for Alembic's steps.  A graph made from literal revisions (tests, tools) gets
a ScriptDirectory over a ``RevisionMap`` of those revisions: still Alembic's
resolution, with no files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from orch.alembic_bridge import internals
from orch.alembic_bridge.runner import alembic_steps
from orch.config.revisions import Graph
from orch.errors import UsageError


def script_of(graph: Graph) -> Any:
    """The ScriptDirectory that resolves *graph*'s targets (detached if none is bound)."""
    if not graph.bound:
        from orch.alembic_bridge.runner import detached_script

        graph.bind_script(functools.cache(lambda: detached_script(graph.revs.values())))
    return graph.script()


@dataclass(frozen=True)
class Resolved:
    """A target resolved against the live current revisions, by Alembic."""

    target: tuple[str, ...]  # heads after the operation ((): base)
    path: tuple[str, ...]  # revisions to apply (upgrade) or undo (downgrade), in order
    label: str  # what to show: a revision id, 'head' or 'base'
    destination: str = ""  # what is given to Alembic as the destination of the run


def _relative(spec: str, sign: str) -> bool:
    return spec[:1] == sign and spec[1:].isdigit()


def resolve_target(graph: Graph, current: tuple[str, ...], spec: str, direction: str) -> Resolved:
    """Resolve ``head``/``+N``/``-N``/``base``/rev/label against *current* for *direction*.

    The steps are Alembic's: the same calls (see
    :mod:`orch.alembic_bridge.internals`) on the same ScriptDirectory that
    ``alembic upgrade``/``downgrade`` (and orch's run) make, from the same
    current heads.  So ``+1`` from one side of a merge counts as Alembic
    counts it (the merge needs the other side first: two revisions), and
    ``-1`` below a merge is refused where Alembic's walk is ambiguous.  orch
    adds its refusals (exit 2): a target on the wrong side of the current
    revision, past head or base, unknown.
    Pure apart from reading the ScriptDirectory: the executor calls it again
    after the lock is taken and compares.
    """
    unknown = graph.unknown(current)
    if unknown and direction != "stamp":  # stamp is the repair: it replaces the rows
        raise UsageError(
            f"{graph.name}: the database is at {', '.join(unknown)}, which no revision file "
            "declares; fix the files or 'orch stamp' it"
        )
    where = f"{graph.name}@{spec}"
    rev: str | None = None
    if direction == "stamp":
        if spec in ("head", "heads"):
            return Resolved(graph.heads, (), "head")
        if spec == "base":
            return Resolved((), (), "base")
        rev = graph.resolve(spec)
        return Resolved((rev,), (), rev)
    if direction not in ("upgrade", "downgrade"):  # pragma: no cover
        raise ValueError(direction)
    up = direction == "upgrade"
    if up and (spec == "base" or _relative(spec, "-")):
        raise UsageError(f"{where}: that is a downgrade target, not an upgrade")
    if not up and (spec in ("head", "heads") or _relative(spec, "+")):
        raise UsageError(f"{where}: that is an upgrade target, not a downgrade")
    if spec in ("head", "heads"):
        destination, label = "heads", "head"
    elif spec == "base":
        destination, label = "base", "base"
    elif _relative(spec, "+" if up else "-"):
        if int(spec[1:]) == 0:
            raise UsageError(f"{where}: a relative target needs N >= 1")
        if not up and len(current) > 1:
            # Alembic only warns ("will be disallowed") and picks one head
            raise UsageError(
                f"{where}: the database is at several heads ({', '.join(current)}); "
                "a relative downgrade from them is ambiguous: name the revision to go down to"
            )
        destination, label = spec, ""
    elif up and "," in spec:
        # "A,B": up to each of these revisions, so the database ends with exactly those
        # heads (how a rollback returns a database that started at several heads)
        revs = tuple(dict.fromkeys(graph.resolve(part.strip()) for part in spec.split(",")))
        under = [r for r in revs if r not in current and r in graph.ancestors(current)]
        if under:
            raise UsageError(
                f"{where}: {', '.join(under)} is below the current revision "
                f"({', '.join(current)}); use 'orch downgrade'"
            )
        destination = label = ",".join(revs)
    else:
        rev = graph.resolve(spec)
        destination, label = rev, rev
        if not up and rev not in graph.ancestors(current):
            raise UsageError(
                f"{where}: {rev} is not below the current revision "
                f"({', '.join(current) or 'base'}); use 'orch upgrade'"
            )
    path, heads = _alembic(graph, current, spec, direction, destination)
    below = rev is not None and rev not in current and rev in graph.ancestors(current)
    if up and below and not path:
        raise UsageError(
            f"{where}: {rev} is below the current revision "
            f"({', '.join(current)}); use 'orch downgrade'"
        )
    if not label:
        label = path[-1] if up else ",".join(heads) or "base"
    return Resolved(heads, path, label, destination)


def _alembic(
    graph: Graph, current: tuple[str, ...], spec: str, direction: str, destination: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(revisions in run order, heads after) from Alembic, its refusals as UsageError."""

    where = f"{graph.name}@{spec}"
    at = ", ".join(current) or "base"
    try:
        steps = alembic_steps(script_of(graph), direction, destination, current)
        path = tuple(internals.step_revision(s) for s in steps)
        heads = internals.heads_after(current, steps) if steps else tuple(sorted(current))
    except internals.resolution_errors() as exc:
        text = str(exc)
        if internals.is_relative_shortfall(exc):
            n = int(spec[1:])
            if direction == "upgrade":
                have, what, end = len(graph.pending(current)), "pending", "head"
            else:
                have, what, end = len(graph.ancestors(current)), "applied", "base"
            if have < n:
                raise UsageError(
                    f"{where}: only {have} revision(s) {what}; {spec} goes past {end}"
                ) from None
            raise UsageError(
                f"{where}: {spec} goes past {end}: Alembic counts {spec} along the revision "
                f"chain from {at}, which has fewer than {n} step(s) ({have} revision(s) "
                f"{what} in all); name a revision instead"
            ) from None
        raise UsageError(
            f"{where}: Alembic cannot {direction} to {destination} from {at}: {text}"
            + ("; name a revision instead" if internals.is_ambiguous(exc) else "")
        ) from None
    return path, heads
