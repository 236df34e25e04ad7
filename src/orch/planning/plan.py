"""Selectors + registry + revision graphs + live revisions -> an ordered plan. Pure.

No database I/O happens here: the caller reads the live revisions and passes
them in, so every rule (selector syntax, dependency rules, wrong-side
targets, order and parallel levels) is tested with literals.  The revisions
of each step are Alembic's (see :func:`orch.config.revisions.resolve_target`).  The
executor resolves each target again after it has taken the database's lock;
for a plan that was shown (:meth:`Plan.announced`) it runs exactly the
announced steps or nothing.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orch.config.registry import Registry
from orch.config.revisions import Graph
from orch.errors import RefusedError, UsageError
from orch.outcomes import Direction
from orch.planning.resolve import Resolved, resolve_target


@dataclass(frozen=True)
class Selector:
    """``db`` or ``db@target`` as typed on the command line."""

    db: str
    target: str | None = None

    def __str__(self) -> str:
        return f"{self.db}@{self.target}" if self.target else self.db


def parse_selectors(
    registry: Registry, texts: Sequence[str], *, require_target: bool = False, command: str = ""
) -> list[Selector]:
    """Parse and check selectors: known databases, no duplicates, targets where required."""
    out: list[Selector] = []
    seen: set[str] = set()
    for text in texts:
        db, sep, target = text.partition("@")
        db = db.strip()
        if not db:
            raise UsageError(f"bad selector {text!r}: expected DB or DB@TARGET")
        if sep and not target:
            raise UsageError(f"bad selector {text!r}: nothing after '@'")
        registry.database(db)
        if db in seen:
            raise UsageError(f"database {db!r} is named twice", databases=(db,))
        seen.add(db)
        if require_target and not sep:
            raise UsageError(
                f"{command} needs an explicit target for {db!r}: {db}@-1, {db}@<revision> "
                f"or {db}@base",
                databases=(db,),
            )
        out.append(Selector(db, target or None))
    return out


def levels(registry: Registry, names: Iterable[str], *, reverse: bool = False) -> list[list[str]]:
    """Topological levels of *names*, keeping transitive edges through unselected databases.

    Level 0 has no selected dependency; databases of one level may run in
    parallel.  ``reverse`` orders dependents first (downgrade).
    """
    selected = list(dict.fromkeys(names))
    order_in_file = {name: i for i, name in enumerate(registry.databases)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    chosen = set(selected)
    for name in selected:
        deps = [d for d in registry.dependencies(name) if d in chosen]
        if reverse:
            sorter.add(name)
            for d in deps:
                sorter.add(d, name)
        else:
            sorter.add(name, *deps)
    sorter.prepare()
    out: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: order_in_file.get(n, 0))
        out.append(ready)
        sorter.done(*ready)
    return out


def edges(
    registry: Registry, names: Iterable[str], *, reverse: bool = False
) -> dict[str, set[str]]:
    """Predecessors of each selected database within the selection (transitive)."""
    chosen = set(names)
    preds: dict[str, set[str]] = {n: set() for n in chosen}
    for name in chosen:
        for d in registry.dependencies(name):
            if d in chosen:
                if reverse:
                    preds[d].add(name)
                else:
                    preds[name].add(d)
    return preds


@dataclass(frozen=True)
class PlanStep:
    """One database's part of a run."""

    db: str
    direction: Direction
    target: str  # as requested: head, +N, -N, base, a revision
    level: int
    current: tuple[str, ...] | None = None  # None: not read (unreachable, offline)
    resolved: Resolved | None = None
    # shown to the operator before the run (protected prompt): the run must match it
    announced: bool = False

    @property
    def revisions(self) -> tuple[str, ...]:
        return self.resolved.path if self.resolved else ()


@dataclass(frozen=True)
class Plan:
    direction: Direction
    steps: tuple[PlanStep, ...]

    @property
    def names(self) -> list[str]:
        return [s.db for s in self.steps]

    def announced(self) -> Plan:
        """This plan, its resolved steps marked as shown: the executor then runs them or
        nothing (``refused``) for a database whose steps changed in between."""
        steps = tuple(dataclasses.replace(s, announced=s.resolved is not None) for s in self.steps)
        return Plan(self.direction, steps)

    def levels(self) -> list[list[PlanStep]]:
        out: dict[int, list[PlanStep]] = {}
        for s in self.steps:
            out.setdefault(s.level, []).append(s)
        return [out[k] for k in sorted(out)]


def _at_head(graph: Graph, current: tuple[str, ...] | None) -> bool:
    return current is not None and not graph.unknown(current) and not graph.pending(current)


def plan_upgrade(
    registry: Registry,
    selectors: Sequence[Selector],
    *,
    all_: bool,
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    with_deps: bool = False,
    ignore_deps: bool = False,
) -> Plan:
    """The upgrade plan.  *currents* maps database -> live revisions (None: unknown)."""
    if all_ and selectors:
        raise UsageError("--all cannot be combined with database selectors")
    if not all_ and not selectors:
        raise UsageError("name the databases to upgrade (e.g. 'orch upgrade core') or use --all")
    if with_deps and ignore_deps:
        raise UsageError("--with-deps and --ignore-deps exclude each other")
    targets: dict[str, str] = (
        {name: "head" for name in registry.databases}
        if all_
        else {s.db: s.target or "head" for s in selectors}
    )
    if not all_:
        behind: list[str] = []
        for name in list(targets):
            for dep in registry.dependencies(name):
                requested = targets.get(dep)
                if requested in ("head", "heads"):
                    continue
                if requested is None and _at_head(graphs[dep], currents.get(dep)):
                    continue
                # not at head now, or moved by this run to a target short of head
                if dep not in behind:
                    behind.append(dep)
        if behind and with_deps:
            named = [d for d in behind if d in targets]
            if named:
                # an explicit target is never silently replaced by head
                raise RefusedError(
                    "--with-deps would move "
                    + ", ".join(f"{d}@{targets[d]}" for d in named)
                    + " to head, which its dependents need; drop the target or use --ignore-deps",
                    databases=named,
                )
            for dep in behind:
                targets[dep] = "head"
        elif behind and not ignore_deps:
            who = ", ".join(
                f"{n} needs {', '.join(d for d in registry.dependencies(n) if d in behind)}"
                for n in targets
                if any(d in behind for d in registry.dependencies(n))
            )
            raise RefusedError(
                f"dependency behind: {who} (not at head); upgrade it first, or use "
                "--with-deps to bring dependencies to head, or --ignore-deps",
                databases=behind,
            )
    return _build(registry, Direction.UPGRADE, targets, graphs, currents)


def plan_downgrade(
    registry: Registry,
    selectors: Sequence[Selector],
    *,
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    force: bool = False,
) -> Plan:
    """The downgrade plan: explicit targets, dependents first, the dependents rule."""
    if not selectors:
        raise UsageError("name the databases to downgrade with a target, e.g. 'analytics@-1'")
    targets = _explicit_targets(selectors, "downgrade", "@-1, {db}@<revision> or {db}@base")
    if not force:
        blocking: dict[str, list[str]] = {}
        for name in targets:
            for dep in registry.dependents(name):
                if targets.get(dep) == "base":
                    continue
                cur = currents.get(dep)
                if cur == ():
                    continue
                blocking.setdefault(name, []).append(dep)
        if blocking:
            who = "; ".join(
                f"{name} has dependents not at base: {', '.join(deps)}"
                for name, deps in blocking.items()
            )
            raise RefusedError(
                f"{who}. Downgrade them to base in the same run, or use --force",
                databases=list(dict.fromkeys(d for deps in blocking.values() for d in deps)),
            )
    return _build(registry, Direction.DOWNGRADE, targets, graphs, currents, reverse=True)


def plan_stamp(
    registry: Registry,
    selectors: Sequence[Selector],
    *,
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
) -> Plan:
    if not selectors:
        raise UsageError("name the databases to stamp, e.g. 'orch stamp core@head'")
    targets = _explicit_targets(selectors, "stamp", "@<revision>, {db}@head or {db}@base")
    return _build(registry, Direction.STAMP, targets, graphs, currents)


def _explicit_targets(selectors: Sequence[Selector], command: str, examples: str) -> dict[str, str]:
    """database -> target, refusing a selector without one (downgrade and stamp never guess)."""
    targets: dict[str, str] = {}
    for s in selectors:
        if not s.target:
            hint = "{db}" + examples
            raise UsageError(
                f"{command} needs an explicit target for {s.db!r}: {hint.format(db=s.db)}",
                databases=(s.db,),
            )
        targets[s.db] = s.target
    return targets


def _build(
    registry: Registry,
    direction: Direction,
    targets: Mapping[str, str],
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    *,
    reverse: bool = False,
) -> Plan:
    steps: list[PlanStep] = []
    for level, names in enumerate(levels(registry, targets, reverse=reverse)):
        for name in names:
            spec = targets[name]
            current = currents.get(name)
            resolved = None
            graph = graphs[name]
            if current is not None:
                resolved = resolve_target(graph, current, spec, direction)
            else:
                _check_syntax(graph, spec, direction)
            steps.append(PlanStep(name, direction, spec, level, current, resolved))
    return Plan(direction, tuple(steps))


def _check_syntax(graph: Graph, spec: str, direction: str) -> None:
    """Without live revisions, still reject unknown revisions and wrong-way targets."""
    if spec in ("head", "heads", "base"):
        if direction == "upgrade" and spec == "base":
            raise UsageError(f"{graph.name}@base: that is a downgrade target, not an upgrade")
        if direction == "downgrade" and spec != "base":
            raise UsageError(f"{graph.name}@{spec}: that is an upgrade target, not a downgrade")
        return
    if spec[:1] in "+-" and spec[1:].isdigit():
        if (spec[0] == "+") != (direction == "upgrade") and direction != "stamp":
            raise UsageError(f"{graph.name}@{spec}: wrong direction for {direction}")
        if direction == "stamp":
            raise UsageError(f"{graph.name}@{spec}: stamp needs a revision, head or base")
        return
    graph.resolve(spec)
