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
from orch.config.revisions import Graph, Requirement, requirements
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
        names = registry.select(db)  # a fleet or fleet:glob: each of its tenants
        if require_target and not sep:
            raise UsageError(
                f"{command} needs an explicit target for {db!r}: {db}@-1, {db}@<revision> "
                f"or {db}@base",
                databases=(db,),
            )
        for name in names:
            if name in seen:
                raise UsageError(f"database {name!r} is named twice", databases=(name,))
            seen.add(name)
            out.append(Selector(name, target or None))
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
    # an interleaved run (requirements across databases, see interleave()) gives a
    # database several steps: part 0, 1, ... run in sequence, each under its own lock
    part: int = 0
    # the keys of the steps this one waits for; None: the registry's depends_on edges
    after: tuple[str, ...] | None = None
    # databases whose database-level dependency rule with this one the revision-level
    # requirements replace (the executor does not check "at head"/"at base" for them)
    refined: tuple[str, ...] = ()

    @property
    def revisions(self) -> tuple[str, ...]:
        return self.resolved.path if self.resolved else ()

    @property
    def key(self) -> str:
        """Unique within a plan: the database's name, ``name#2`` for its second step..."""
        return self.db if self.part == 0 else f"{self.db}#{self.part + 1}"


@dataclass(frozen=True)
class Plan:
    direction: Direction
    steps: tuple[PlanStep, ...]

    @property
    def names(self) -> list[str]:
        """The databases of the plan, each once, in order of their first step."""
        return list(dict.fromkeys(s.db for s in self.steps))

    @property
    def interleaved(self) -> bool:
        """Some database has more than one step (requirements across databases)."""
        return any(s.part for s in self.steps)

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
    reqs: Sequence[Requirement] | None = None,
) -> Plan:
    """The upgrade plan.  *currents* maps database -> live revisions (None: unknown).

    *reqs*: the ``orch_requires`` of *graphs* (computed from them when None).
    Where revisions of two databases are related by requirements, those replace
    the registry's database-level rule between them: the plan is interleaved at
    revision level (:func:`interleave`) and an unmet requirement is refused,
    naming it, unless *with_deps* (then the required database is brought just far
    enough).
    """
    reqs = _requirements_of(registry, graphs, reqs)
    refined = refined_pairs(reqs)
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
                if frozenset((name, dep)) in refined:
                    continue  # requirements say what it needs, at revision level
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
                if any(d in behind for d in registry.dependencies(n) if {n, d} not in refined)
            )
            raise RefusedError(
                f"dependency behind: {who} (not at head); upgrade it first, or use "
                "--with-deps to bring dependencies to head, or --ignore-deps",
                databases=behind,
            )
    if reqs and not ignore_deps:
        _meet_upgrade(
            graphs,
            currents,
            targets,
            reqs,
            with_deps,
            explicit=set() if all_ else {s.db for s in selectors if s.target},
        )
    plan = _build(registry, Direction.UPGRADE, targets, graphs, currents)
    return interleave(registry, plan, graphs, reqs)


def plan_downgrade(
    registry: Registry,
    selectors: Sequence[Selector],
    *,
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    force: bool = False,
    cascade: bool = False,
    reqs: Sequence[Requirement] | None = None,
) -> Plan:
    """The downgrade plan: explicit targets, dependents first, the dependents rule.

    Between databases related by requirements (``orch_requires``) the rule is
    at revision level: a downgrade that removes a revision an applied revision
    of another database requires is refused, naming both, unless *cascade*:
    then those dependents are downgraded first, just far enough.
    """
    if not selectors:
        raise UsageError("name the databases to downgrade with a target, e.g. 'analytics@-1'")
    targets = _explicit_targets(selectors, "downgrade", "@-1, {db}@<revision> or {db}@base")
    reqs = _requirements_of(registry, graphs, reqs)
    refined = refined_pairs(reqs)
    if reqs and not force:
        _meet_downgrade(graphs, currents, targets, reqs, cascade)
    if not force:
        blocking: dict[str, list[str]] = {}
        for name in list(targets):
            for dep in registry.dependents(name):
                if frozenset((name, dep)) in refined:
                    continue
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
    plan = _build(registry, Direction.DOWNGRADE, targets, graphs, currents, reverse=True)
    return interleave(registry, plan, graphs, reqs)


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


# ---------------------------------------------------------------- requirements across databases


def _requirements_of(
    registry: Registry, graphs: Mapping[str, Graph], reqs: Sequence[Requirement] | None
) -> list[Requirement]:
    if reqs is not None:
        return [r for r in reqs if r.db in graphs and r.on_db in graphs]
    return requirements(graphs, [*registry.databases, *registry.left_out])


def refined_pairs(reqs: Iterable[Requirement]) -> set[frozenset[str]]:
    """Pairs of databases whose order requirements give at revision level.

    Between such a pair the registry's ``depends_on`` (the coarse default:
    all of one before any of the other) no longer applies, neither to the
    order nor to the "at head"/"at base" rules.
    """
    return {frozenset((r.db, r.on_db)) for r in reqs}


def related(
    registry: Registry, graphs: Mapping[str, Graph], names: Iterable[str], *, up: bool = True
) -> list[str]:
    """*names*, the databases the registry makes them depend on (*up*) or their dependents,
    and every database linked to those by requirements: what a plan must read."""
    reqs = _requirements_of(registry, graphs, None)
    links: dict[str, set[str]] = {}
    for r in reqs:
        links.setdefault(r.db, set()).add(r.on_db)
        links.setdefault(r.on_db, set()).add(r.db)
    out: list[str] = []
    stack = list(names)
    while stack:
        name = stack.pop(0)
        if name in out:
            continue
        out.append(name)
        more = registry.dependencies(name) if up else registry.dependents(name)
        stack.extend(d for d in [*more, *sorted(links.get(name, ()))] if d in graphs)
    return out


def _applied(graph: Graph, current: Sequence[str]) -> set[str]:
    return graph.ancestors(current) if not graph.unknown(current) else set(current)


def _heads_spec(graph: Graph, revs: set[str], *, up: bool, where: str) -> str:
    """A target naming exactly the heads of *revs* (a downward-closed set)."""
    heads = graph.heads_of(revs) if revs else ()
    if up:
        return ",".join(heads) if heads else "base"
    if len(heads) > 1:
        raise UsageError(
            f"{where}: going down would leave it at several heads ({', '.join(heads)}); "
            "name a target for it"
        )
    return heads[0] if heads else "base"


def _meet_upgrade(
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    targets: dict[str, str],
    reqs: Sequence[Requirement],
    with_deps: bool,
    explicit: set[str],
) -> None:
    """Refuse an upgrade whose revisions require what it neither has nor applies.

    With *with_deps*, a required database not named is added (or its target
    raised) just far enough: up to the revisions required, then again for what
    those require, until nothing is missing.  An explicit target is never
    raised silently.
    """
    by_db: dict[str, list[Requirement]] = {}
    for r in reqs:
        by_db.setdefault(r.db, []).append(r)
    for _ in range(len(graphs) * 4 + 4):  # each round adds or raises a target, or ends
        planned: dict[str, set[str]] = {}
        for name, spec in targets.items():
            cur = currents.get(name)
            if cur is None:
                continue
            planned[name] = set(resolve_target(graphs[name], cur, spec, Direction.UPGRADE).path)
        missing: list[Requirement] = []
        for name, revs in planned.items():
            for r in by_db.get(name, ()):
                if r.revision not in revs:
                    continue
                cur = currents.get(r.on_db)
                if cur is None:
                    continue  # unreadable: its own step fails, and this one is skipped
                if r.on_revision in _applied(graphs[r.on_db], cur):
                    continue
                if r.on_revision in planned.get(r.on_db, set()):
                    continue
                missing.append(r)
        if not missing:
            return
        cant = [r for r in missing if not with_deps or r.on_db in explicit]
        if cant:
            names = ", ".join(
                f"{r} (at {', '.join(currents.get(r.on_db) or ()) or 'base'}"
                + (f", target {targets[r.on_db]}" if r.on_db in targets else "")
                + ")"
                for r in cant
            )
            hint = (
                "raise its target"
                if with_deps
                else "upgrade it first, or use --with-deps to bring it just far enough"
            )
            raise RefusedError(
                f"requirement not met: {names}; {hint}",
                databases=list(dict.fromkeys(r.on_db for r in cant)),
            )
        for on_db in dict.fromkeys(r.on_db for r in missing):
            graph = graphs[on_db]
            have = _applied(graph, currents.get(on_db) or ())
            want = have | planned.get(on_db, set())
            want |= graph.ancestors(r.on_revision for r in missing if r.on_db == on_db)
            targets[on_db] = _heads_spec(graph, want, up=True, where=on_db)
    raise UsageError("requirements across databases could not be met")  # pragma: no cover


def _meet_downgrade(
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    targets: dict[str, str],
    reqs: Sequence[Requirement],
    cascade: bool,
) -> None:
    """Refuse a downgrade that removes a revision an applied revision elsewhere requires.

    With *cascade*, each such dependent is downgraded first, just far enough:
    the requiring revision and what descends from it in its database go, and
    nothing else (again for what their removal breaks, until nothing does).
    """
    for _ in range(len(graphs) * 4 + 4):
        removed: dict[str, set[str]] = {}
        for name, spec in targets.items():
            cur = currents.get(name)
            if cur is None:
                continue
            res = resolve_target(graphs[name], cur, spec, Direction.DOWNGRADE)
            removed[name] = set(res.path)
        broken: list[Requirement] = []
        for r in reqs:
            if r.on_revision not in removed.get(r.on_db, set()):
                continue
            cur = currents.get(r.db)
            if cur is None:
                continue
            if r.revision in _applied(graphs[r.db], cur) and r.revision not in removed.get(
                r.db, set()
            ):
                broken.append(r)
        if not broken:
            return
        if not cascade:
            what = "; ".join(
                f"{r.db}@{r.revision} (applied) requires {r.on_db}@{r.on_revision}, "
                f"which {r.on_db}@{targets[r.on_db]} removes"
                for r in broken
            )
            raise RefusedError(
                f"requirement would break: {what}. Downgrade the dependents first, or use "
                "--cascade to downgrade them just far enough",
                databases=list(dict.fromkeys(r.db for r in broken)),
            )
        for name in dict.fromkeys(r.db for r in broken):
            graph = graphs[name]
            have = _applied(graph, currents.get(name) or ())
            going = set(removed.get(name, set()))
            for r in broken:
                if r.db == name:
                    going |= {x for x in have if r.revision in graph.ancestors([x])}
            targets[name] = _heads_spec(graph, have - going, up=False, where=name)
    raise UsageError("requirements across databases could not be met")  # pragma: no cover


def interleave(
    registry: Registry, plan: Plan, graphs: Mapping[str, Graph], reqs: Sequence[Requirement]
) -> Plan:
    """Split *plan* at revision level where requirements relate its databases.

    One graph over the revisions the plan runs: each database's revisions in
    Alembic's order, an edge for each requirement between two of them (for a
    downgrade, reversed: the requiring revision goes first), and the
    registry's ``depends_on`` as the coarse default between databases no
    requirement relates (all of one before any of the other).  A database's
    revisions are cut where an edge enters or leaves them; each piece is a
    step, resolved again by Alembic from where the previous piece leaves the
    database, so what is shown is what runs.  Steps of one database run in
    sequence; steps of different databases with no path between them may run
    in parallel.  A plan with no requirement among its databases is returned
    as it is.
    """
    refined = refined_pairs(reqs)
    dbs = set(plan.names)
    if (
        plan.direction == Direction.STAMP
        or not any(len(p & dbs) == 2 for p in refined)
        or any(s.resolved is None or s.current is None for s in plan.steps)
    ):
        return plan
    up = plan.direction == Direction.UPGRADE
    paths = {s.db: list(s.revisions) for s in plan.steps}
    nodes = {(db, rev) for db, revs in paths.items() for rev in revs}
    cross: set[tuple[tuple[str, str], tuple[str, str]]] = set()
    for r in reqs:
        need, needer = (r.on_db, r.on_revision), (r.db, r.revision)
        if need in nodes and needer in nodes:
            cross.add((need, needer) if up else (needer, need))
    for x in paths:
        for y in registry.dependencies(x):
            if y in paths and paths[x] and paths[y] and frozenset((x, y)) not in refined:
                first, then = (y, x) if up else (x, y)
                cross.add(((first, paths[first][-1]), (then, paths[then][0])))
    cut_before = {b for _, b in cross}
    cut_after = {a for a, _ in cross}
    pieces: list[tuple[str, list[str]]] = []
    piece_of: dict[tuple[str, str], int] = {}
    for step in plan.steps:
        revs = paths[step.db]
        if not revs:
            pieces.append((step.db, []))
            continue
        cur: list[str] = []
        for rev in revs:
            if cur and (step.db, rev) in cut_before:
                pieces.append((step.db, cur))
                cur = []
            cur.append(rev)
            piece_of[(step.db, rev)] = len(pieces)
            if (step.db, rev) in cut_after:
                pieces.append((step.db, cur))
                cur = []
        if cur:
            pieces.append((step.db, cur))
    preds: dict[int, set[int]] = {i: set() for i in range(len(pieces))}
    last: dict[str, int] = {}
    for i, (db, _revs) in enumerate(pieces):
        if db in last:
            preds[i].add(last[db])
        last[db] = i
    for a, b in cross:
        if piece_of[a] != piece_of[b]:
            preds[piece_of[b]].add(piece_of[a])
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for i, p in preds.items():
        sorter.add(i, *p)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(f"{pieces[i][0]}({', '.join(pieces[i][1])})" for i in exc.args[1])
        raise UsageError(
            f"the registry's depends_on and the revisions' orch_requires contradict each other: "
            f"{cycle}"
        ) from None
    order: list[int] = []
    level_of: dict[int, int] = {}
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        for i in ready:
            level_of[i] = max((level_of[p] + 1 for p in preds[i]), default=0)
        order.extend(ready)
        sorter.done(*ready)
    # resolve each piece from where the previous one leaves its database
    by_db = {s.db: s for s in plan.steps}
    parts: dict[str, int] = {}
    sim: dict[str, tuple[str, ...]] = {s.db: s.current or () for s in plan.steps}
    done: dict[str, set[str]] = {db: set() for db in paths}
    made: dict[int, PlanStep] = {}
    count = {db: sum(1 for d, _ in pieces if d == db) for db in paths}
    for i in range(len(pieces)):  # per database, pieces are in path order
        db, revs = pieces[i]
        step = by_db[db]
        part = parts.get(db, 0)
        parts[db] = part + 1
        graph = graphs[db]
        done[db] |= set(revs)
        relative = step.target[:1] in "+-" and step.target[1:].isdigit()
        if count[db] == 1:
            made[i] = dataclasses.replace(step, part=0)
            continue
        if part == count[db] - 1 and not relative:
            spec = step.target
        elif up:
            spec = _heads_spec(graph, set(sim[db]) | set(revs), up=True, where=db)
        else:
            start = _applied(graph, step.current or ())
            spec = _heads_spec(graph, start - done[db], up=False, where=db)
        resolved = resolve_target(graph, sim[db], spec, plan.direction)
        if set(resolved.path) != set(revs):
            raise UsageError(  # pragma: no cover  (a prefix of Alembic's order is closed)
                f"{db}: cannot split its {plan.direction} at revision level: Alembic would run "
                f"{', '.join(resolved.path)} for {', '.join(revs)}"
            )
        made[i] = dataclasses.replace(
            step, target=spec, current=sim[db], resolved=resolved, part=part
        )
        sim[db] = resolved.target
    refined_of = {
        db: tuple(sorted(o for p in refined if db in p for o in p if o != db)) for db in paths
    }
    steps = [
        dataclasses.replace(
            made[i],
            level=level_of[i],
            after=tuple(sorted(made[p].key for p in preds[i])),
            refined=refined_of[made[i].db],
        )
        for i in order
    ]
    return Plan(plan.direction, tuple(steps))


# ---------------------------------------------------------------- releases


def plan_release(
    registry: Registry,
    tag: str,
    heads: Mapping[str, tuple[str, ...]],
    direction: Direction,
    *,
    graphs: Mapping[str, Graph],
    currents: Mapping[str, tuple[str, ...] | None],
    keep_new: bool = False,
    reqs: Sequence[Requirement] | None = None,
) -> Plan:
    """Every database of the environment to the release's *heads* (``upgrade/downgrade --to``).

    A release is a consistent point (the file heads of every database when it
    was tagged), so the database-level rules (dependencies at head,
    dependents at base) do not apply between databases that all move to it;
    the requirements across databases give the order and are checked.  On a
    downgrade, a database the release does not list (added after the tag)
    goes to base, or is left alone with *keep_new*.  A database already at
    the release has no step; one on the wrong side is refused (exit 2),
    naming the command that brings it there.
    """
    reqs = _requirements_of(registry, graphs, reqs)
    up = direction == Direction.UPGRADE
    targets: dict[str, str] = {}
    wrong: list[str] = []
    for name in registry.databases:
        if name not in graphs:
            continue
        cur = currents.get(name)
        if cur is None:
            raise UsageError(
                f"{name}: its live revision could not be read; a release needs every "
                "database of the environment",
                databases=(name,),
            )
        if name not in heads:
            if up or keep_new:
                continue  # added after the tag: upgrade --to and --keep-new leave it alone
            want: tuple[str, ...] = ()
        else:
            want = tuple(heads[name])
        graph = graphs[name]
        unknown = [r for r in want if r not in graph]
        if unknown:
            raise UsageError(
                f"release {tag}: {name} revision {', '.join(unknown)} is not in its history "
                "any more",
                databases=(name,),
            )
        if sorted(cur) == sorted(want):
            continue
        have = _applied(graph, cur)
        wanted = graph.ancestors(want)
        if up and not have <= wanted or not up and not wanted <= have:
            at = ", ".join(cur) or "base"
            wrong.append(f"{name} (at {at}; {tag} has {', '.join(want) or 'base'})")
            continue
        if up:
            targets[name] = ",".join(want)
        else:
            if len(want) > 1:
                raise UsageError(
                    f"release {tag}: {name} has several heads ({', '.join(want)}); a downgrade "
                    "goes to one revision",
                    databases=(name,),
                )
            targets[name] = want[0] if want else "base"
    if wrong:
        other = "downgrade" if up else "upgrade"
        raise RefusedError(
            f"{'upgrade' if up else 'downgrade'} --to {tag}: not on that side of the release: "
            f"{'; '.join(wrong)}; use 'orch {other} --to {tag}' first",
            databases=[w.split(" ", 1)[0] for w in wrong],
        )
    if reqs:
        if up:
            _meet_upgrade(graphs, currents, targets, reqs, False, set(targets))
        else:
            _meet_downgrade(graphs, currents, targets, reqs, False)
    plan = _build(registry, direction, targets, graphs, currents, reverse=not up)
    return interleave(registry, plan, graphs, reqs)
