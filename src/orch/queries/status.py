"""Read-only state of databases and environments.

Reads need no Alembic machinery: the revision graph comes from headers
(:mod:`orch.config.revisions`) and the version rows from one SELECT, so many
databases are queried concurrently in threads with the connect timeout.
Nothing here writes to a database or creates a file: SQLite files are opened
read-only and a missing one simply has no revision yet.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orch.backends import for_url
from orch.config.registry import Registry, Target
from orch.config.revisions import Graph
from orch.errors import DatabaseError, OrchError
from orch.outcomes import State
from orch.planning.live import Live, edited_revisions, graphs_for, read_live_full, read_live_schemas
from orch.store.db import (
    MissingSchema,
    describe_error,
    preload_drivers,
)


@dataclass
class DbStatus:
    """One database of one environment (an entry of ``status --json``'s ``databases``)."""

    name: str
    url: str | None
    current: list[str] | None
    heads: list[str]
    pending: int | None
    state: State
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the newest release tag whose heads for this database are its current revisions
    # (None: between releases, unread, or no release yet); set by orch.service
    release: str | None = None
    #: applied revisions whose file no longer matches the hash recorded here, in apply order
    edited: list[str] = field(default_factory=list)
    #: applied revision -> the sha256 recorded for it here (``status --all-envs`` compares)
    recorded: dict[str, str] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "current": self.current,
            "heads": self.heads,
            "pending": self.pending,
            "state": self.state,
            "error": self.error,
            "release": self.release,
            "edited": list(self.edited),
        }


def status_of(
    target: Target, graph: Graph, registry: Registry, live: Live | None = None
) -> DbStatus:
    """One database's state; the first that applies of: unconfigured, unreachable, running,
    dirty, unknown_revision, edited, behind, up_to_date.  *live*: already read (a batch)."""
    heads = list(graph.heads)
    if target.url is None:
        return DbStatus(target.name, None, None, heads, None, State.UNCONFIGURED, target.missing)
    url = target.display_url
    try:
        live = live if live is not None else read_live_full(target, registry)
        current, running, dirty = live.current, live.running, live.dirty
    except MissingSchema as exc:  # reachable, never migrated: every revision is pending
        return DbStatus(target.name, url, [], heads, len(graph.pending(())), State.BEHIND, str(exc))
    except DatabaseError as exc:
        return DbStatus(target.name, url, None, heads, None, State.UNREACHABLE, str(exc))
    except OrchError:
        raise
    except Exception as exc:
        return DbStatus(target.name, url, None, heads, None, State.UNREACHABLE, describe_error(exc))
    cur = list(current)
    unknown = graph.unknown(current)
    pending = None if unknown else len(graph.pending(current))
    edited = edited_revisions(graph, current, live.recorded)
    if running:
        state, error = State.RUNNING, "a migration holds the lock now"
    elif dirty is not None:
        rev, err = dirty
        state = State.DIRTY
        from orch.store.audit import repair_hint

        error = (
            f"revision {rev} failed or was interrupted half-way"
            + (f": {err}" if err else "")
            + f"; {repair_hint(target.name, rev)}"
        )
    elif unknown:
        state = State.UNKNOWN_REVISION
        error = f"revision {', '.join(unknown)} is not in {graph.name}'s directory"
    elif edited:
        state = State.EDITED
        error = edited_error(target.name, edited)
    elif pending:
        state, error = State.BEHIND, None
    else:
        state, error = State.UP_TO_DATE, None
    st = DbStatus(target.name, url, cur, heads, pending, state, error, edited=edited)
    applied = graph.ancestors(c for c in current if c in graph)
    st.recorded = {r: h for r, h in live.recorded.items() if r in applied}
    st.extra["backend"] = for_url(target.url).name
    return st


def edited_error(name: str, edited: Sequence[str]) -> str:
    """What ``status`` says about edited revisions (and how to clear it)."""
    revs = ", ".join(edited)
    return (
        f"revision {revs} applied here no longer matches its file (edited since it ran); "
        f"restore the file, or 'orch accept {name}@{edited[0]} -m WHY'"
    )


@dataclass(frozen=True)
class Differing:
    """A revision that ran with different file contents in different environments."""

    database: str
    revision: str
    hashes: dict[str, str]  # environment -> the sha256 recorded there

    @property
    def environments(self) -> str:
        """The environments grouped by the contents they ran: ``dev, ci (1a2b3c4d5e6f) vs ...``."""
        groups: dict[str, list[str]] = {}
        for env, digest in self.hashes.items():
            groups.setdefault(digest, []).append(env)
        return " vs ".join(f"{', '.join(envs)} ({digest[:12]})" for digest, envs in groups.items())

    @property
    def message(self) -> str:
        return (
            f"{self.database}: revision {self.revision} ran with different contents: "
            f"{self.environments}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "revision": self.revision,
            "sha256": dict(self.hashes),
            "message": self.message,
        }


def differing(matrix: Sequence[tuple[str, Sequence[DbStatus]]]) -> list[Differing]:
    """Revisions whose recorded hashes differ between environments (``status --all-envs``).

    Compares what each environment recorded when the revision ran there (or
    was adopted or accepted), not the files now: the point is that two
    environments did not run the same thing.
    """
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for env, rows in matrix:
        for s in rows:
            for rev, digest in s.recorded.items():
                seen.setdefault((s.name, rev), {})[env] = digest
    return [
        Differing(db, rev, hashes)
        for (db, rev), hashes in seen.items()
        if len(set(hashes.values())) > 1
    ]


def collect(
    registry: Registry,
    env: str | None,
    names: Sequence[str] | None = None,
    *,
    graphs: dict[str, Graph] | None = None,
    max_workers: int = 16,
    settle_only: bool = False,
) -> list[DbStatus]:
    """Status of every (or the named) database of one environment, concurrently.

    *settle_only*: for a run's read before it starts, which needs only to
    know which tenants are up to date: the recorded hashes of tenant schemas
    that are behind are not read (their state may then say ``behind`` where
    ``status`` would say ``edited``; the run reads them again under the lock).
    """
    targets = [t for t in registry.targets(env) if names is None or t.name in names]
    graphs = graphs if graphs is not None else graphs_for(registry, [t.name for t in targets])
    if len(targets) <= 1:
        return [status_of(t, graphs[t.name], registry) for t in targets]
    preload_drivers(t.url for t in targets)
    lives = _read_schema_tenants(targets, registry, graphs if settle_only else None)
    workers = max(1, min(max_workers, len(targets)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(
            pool.map(lambda t: status_of(t, graphs[t.name], registry, lives.get(t.name)), targets)
        )


def _read_schema_tenants(
    targets: Sequence[Target], registry: Registry, settle: Mapping[str, Graph] | None = None
) -> dict[str, Live]:
    """The live state of tenants that are schemas of one PostgreSQL database, a database
    at a time (see :func:`orch.planning.live.read_live_schemas`); others are read alone.
    *settle*: their graphs; hashes are then read only for tenants at head."""

    def at_head(t: Target, current: tuple[str, ...]) -> bool:
        assert settle is not None
        graph = settle[t.name]
        try:
            return not graph.unknown(current) and not graph.pending(current)
        except Exception:  # let the full read say what is wrong
            return True

    groups: dict[tuple[str, str], list[Target]] = {}
    for t in targets:
        if t.url is None or not t.db.schema or not t.db.version_table_schema:
            continue
        b = for_url(t.url)
        if not b.reads_schema_tenants_together:
            continue
        groups.setdefault((t.url, t.db.version_table), []).append(t)
    lives: dict[str, Live] = {}
    for group in groups.values():
        lives.update(
            read_live_schemas(group, registry, hashes_when=at_head if settle is not None else None)
        )
    return lives


def collect_all(
    registry: Registry,
    names: Sequence[str] | None = None,
    *,
    graphs: dict[str, Graph] | None = None,
    max_workers: int = 32,
) -> list[tuple[str, list[DbStatus]]]:
    """Status of every environment: every cell of the matrix queried at once.

    One pool over all (environment, database) cells, so the whole matrix
    takes about one connect timeout however many hosts are down.  A URL that
    cannot be used in one environment (missing variable, unsupported driver)
    makes that cell ``unconfigured`` with the reason, never the whole view
    fail.
    """
    cells: list[tuple[str, Target]] = []
    for env in registry.environments:
        for t in registry.targets(env, strict=False):
            if names is None or t.name in names:
                cells.append((env, t))
    graphs = graphs if graphs is not None else graphs_for(registry, names)
    preload_drivers(t.url for _env, t in cells)
    workers = max(1, min(max_workers, len(cells)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(lambda c: status_of(c[1], graphs[c[1].name], registry), cells))
    out: dict[str, list[DbStatus]] = {env: [] for env in registry.environments}
    for (env, _t), st in zip(cells, found, strict=True):
        out[env].append(st)
    return list(out.items())
