"""``orch history DB`` and ``orch graph``: what a reviewer reads before a run.

History comes from the revision headers (no module import, like ``status``)
and the live revision, read-only; when the database cannot be read the
history is still shown, without the applied marks.  The dependency graph is
the registry's ``depends_on`` and is rendered as text, Mermaid or Graphviz
dot, with edges from a dependency to its dependent (``core --> analytics``:
core migrates first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.config.registry import Registry
from orch.config.revisions import Graph, requirements
from orch.outcomes import State
from orch.planning.live import graphs_for
from orch.planning.live import graphs_for as live_graphs_for
from orch.planning.plan import levels
from orch.queries import status as st

_DATE = re.compile(r"^Create Date:\s*(?P<date>.+?)\s*$", re.M)


@dataclass(frozen=True)
class Entry:
    """One revision of the history."""

    revision: str
    down: tuple[str, ...]
    message: str
    branch_labels: tuple[str, ...]
    applied: bool | None  # None: the live revision could not be read
    head: bool
    current: bool
    create_date: str | None
    path: str

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "down_revision": list(self.down),
            "message": self.message,
            "branch_labels": list(self.branch_labels),
            "applied": self.applied,
            "head": self.head,
            "current": self.current,
            "create_date": self.create_date,
            "path": self.path,
        }

    @property
    def tags(self) -> str:
        tags = []
        if self.head:
            tags.append("head")
        if self.current:
            tags.append("current")
        if len(self.down) > 1:
            tags.append("merge")
        if not self.down:
            tags.append("base")
        tags += [f"label {label}" for label in self.branch_labels]
        return ", ".join(tags)


@dataclass(frozen=True)
class History:
    database: str
    environment: str
    current: tuple[str, ...] | None
    heads: tuple[str, ...]
    state: State
    error: str | None
    entries: tuple[Entry, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "environment": self.environment,
            "current": list(self.current) if self.current is not None else None,
            "heads": list(self.heads),
            "state": self.state,
            "error": self.error,
            "revisions": [e.as_json() for e in self.entries],
        }


def _create_date(path: str) -> str | None:
    try:
        head = Path(path).read_text(encoding="utf-8")[:4000]
    except OSError:
        return None
    m = _DATE.search(head)
    return m["date"] if m else None


def entries(graph: Graph, current: tuple[str, ...] | None) -> list[Entry]:
    """Newest first: the reverse of apply order.  Pure apart from reading Create Date."""
    readable = current is not None and not graph.unknown(current)
    applied = graph.ancestors(current) if readable and current is not None else None
    out: list[Entry] = []
    for rev in reversed(graph.ordered(set(graph.revs))):
        r = graph.revs[rev]
        out.append(
            Entry(
                revision=rev,
                down=r.down,
                message=r.doc,
                branch_labels=r.branch_labels,
                applied=None if applied is None else rev in applied,
                head=rev in graph.heads,
                current=current is not None and rev in current,
                create_date=_create_date(r.path) if r.path else None,
                path=r.path,
            )
        )
    return out


def history(registry: Registry, env: str | None, name: str) -> History:
    """The history of database *name* with the applied revisions of *env* marked.

    A database that *env* leaves out (its URL there is null) still has its
    revision files, and reading them is what ``history`` is for: they are
    listed unmarked, with state ``absent`` saying why.
    """

    registry.database(name)
    graphs = live_graphs_for(registry, [name])
    graph = graphs[name]
    spec = registry.environment(env)
    environment = spec.name
    if name in spec.absent:
        return History(
            database=name,
            environment=environment,
            current=None,
            heads=graph.heads,
            state=State.ABSENT,
            error=str(registry.not_part(name, environment)),
            entries=tuple(entries(graph, None)),
        )
    status = st.collect(registry, environment, [name], graphs=graphs)[0]
    current = tuple(status.current) if status.current is not None else None
    return History(
        database=name,
        environment=environment,
        current=current,
        heads=graph.heads,
        state=status.state,
        error=status.error,
        entries=tuple(entries(graph, current)),
    )


# ---------------------------------------------------------------- dependency graph


def dependency_edges(registry: Registry) -> list[tuple[str, str]]:
    """Direct edges (dependency, dependent) in registry order."""
    return [(dep, db.name) for db in registry.databases.values() for dep in db.depends_on]


def absent_from(registry: Registry, name: str) -> list[str]:
    """The environments that leave database *name* out (their URL for it is null)."""
    return [e.name for e in registry.environments.values() if name in e.absent]


def render_graph(registry: Registry, fmt: str) -> str:
    """The database dependency graph as ``text``, ``mermaid`` or ``dot``.

    The graph is the registry's, every database in it; the text form adds a
    NOT IN column when some environment leaves databases out.
    """

    edges = dependency_edges(registry)
    names = list(registry.databases)
    linked = {n for e in edges for n in e}
    if fmt == "mermaid":
        lines = ["graph TD"]
        lines += [f"  {n}" for n in names if n not in linked]
        lines += [f"  {a} --> {b}" for a, b in edges]
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph orch {", "  rankdir=LR;"]
        lines += [f'  "{n}";' for n in names]
        lines += [f'  "{a}" -> "{b}";' for a, b in edges]
        lines.append("}")
        return "\n".join(lines)
    if fmt == "text":
        from orch.render import table

        level_of = {n: i for i, group in enumerate(levels(registry, names)) for n in group}
        partial = any(e.absent for e in registry.environments.values())
        rows = []
        for n in sorted(names, key=lambda x: (level_of[x], names.index(x))):
            db = registry.databases[n]
            dependents = [b for a, b in edges if a == n]
            rows.append(
                [str(level_of[n]), n, ", ".join(db.depends_on) or "-", ", ".join(dependents) or "-"]
            )
            if partial:
                rows[-1].append(", ".join(absent_from(registry, n)) or "-")
        headers = ["LEVEL", "DATABASE", "DEPENDS ON", "DEPENDENTS"]
        return table([*headers, "NOT IN"] if partial else headers, rows)
    raise ValueError(fmt)  # pragma: no cover - Click restricts the choices


def graph_json(registry: Registry) -> dict[str, Any]:

    names = list(registry.databases)
    level_of = {n: i for i, group in enumerate(levels(registry, names)) for n in group}
    return {
        "databases": [
            {
                "name": n,
                "depends_on": list(registry.databases[n].depends_on),
                "level": level_of[n],
                "absent_from": absent_from(registry, n),
            }
            for n in names
        ],
        "edges": [{"from": a, "to": b} for a, b in dependency_edges(registry)],
    }


# ---------------------------------------------------------------- revision-level graph


def _node(db: str, rev: str) -> str:
    """A mermaid/dot-safe node id for revision *rev* of *db*."""
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", f"{db}__{rev}")


def revision_rows(registry: Registry) -> list[dict[str, Any]]:
    """Every revision of every database, in apply order per database, with its parents
    (down revisions) and its requirements across databases (``orch_requires``, resolved)."""

    graphs = graphs_for(registry)
    reqs: dict[tuple[str, str], list[str]] = {}
    for r in requirements(graphs, registry.databases):
        reqs.setdefault((r.db, r.revision), []).append(f"{r.on_db}@{r.on_revision}")
    rows = []
    for name, graph in graphs.items():
        for rev in graph.ordered(set(graph.revs)):
            rows.append(
                {
                    "database": name,
                    "revision": rev,
                    "down_revision": list(graph.revs[rev].down),
                    "requires": reqs.get((name, rev), []),
                }
            )
    return rows


def render_revision_graph(registry: Registry, fmt: str) -> str:
    """The revision-level graph across databases as ``text``, ``mermaid`` or ``dot``.

    One node per revision (``db@revision``), grouped by database; an edge from
    each parent to its child, and a dashed edge labelled ``requires`` from each
    required revision to the revision of another database that requires it
    (the order a run follows).
    """
    rows = revision_rows(registry)
    by_db: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_db.setdefault(row["database"], []).append(row)
    if fmt == "mermaid":
        lines = ["graph TD"]
        for db, revs in by_db.items():
            lines.append(f"  subgraph {_node(db, '')}[{db}]")
            lines += [f'    {_node(db, r["revision"])}["{db}@{r["revision"]}"]' for r in revs]
            lines.append("  end")
        for r in rows:
            me = _node(r["database"], r["revision"])
            lines += [f"  {_node(r['database'], p)} --> {me}" for p in r["down_revision"]]
        for r in rows:
            me = _node(r["database"], r["revision"])
            for req in r["requires"]:
                db, _, rev = req.partition("@")
                lines.append(f"  {_node(db, rev)} -.->|requires| {me}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph orch_revisions {", "  rankdir=LR;"]
        for db, revs in by_db.items():
            lines.append(f'  subgraph "cluster_{db}" {{')
            lines.append(f'    label="{db}";')
            lines += [f'    "{db}@{r["revision"]}";' for r in revs]
            lines.append("  }")
        for r in rows:
            me = f"{r['database']}@{r['revision']}"
            lines += [f'  "{r["database"]}@{p}" -> "{me}";' for p in r["down_revision"]]
        for r in rows:
            me = f"{r['database']}@{r['revision']}"
            lines += [
                f'  "{req}" -> "{me}" [style=dashed, label="requires"];' for req in r["requires"]
            ]
        lines.append("}")
        return "\n".join(lines)
    if fmt == "text":
        from orch.render import table

        body = [
            [
                r["database"],
                r["revision"],
                ", ".join(r["down_revision"]) or "base",
                ", ".join(r["requires"]) or "-",
            ]
            for r in rows
        ]
        return table(["DATABASE", "REVISION", "DOWN REVISION", "REQUIRES"], body)
    raise ValueError(fmt)  # pragma: no cover - Click restricts the choices


def revision_graph_json(registry: Registry) -> dict[str, Any]:
    rows = revision_rows(registry)
    edges = [
        {"from": f"{r['database']}@{p}", "to": f"{r['database']}@{r['revision']}", "kind": "down"}
        for r in rows
        for p in r["down_revision"]
    ]
    edges += [
        {"from": req, "to": f"{r['database']}@{r['revision']}", "kind": "requires"}
        for r in rows
        for req in r["requires"]
    ]
    return {"revisions": rows, "edges": edges}
