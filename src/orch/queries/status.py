"""Read-only state of databases and environments.

Reads need no Alembic machinery: the revision graph comes from headers
(:mod:`orch.config.revisions`) and the version rows from one SELECT, so many
databases are queried concurrently in threads with the connect timeout.
Nothing here writes to a database or creates a file: SQLite files are opened
read-only and a missing one simply has no revision yet.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orch.backends import for_url
from orch.config.registry import Registry, Target
from orch.config.revisions import Graph
from orch.errors import DatabaseError, OrchError
from orch.outcomes import State
from orch.planning.live import graphs_for, read_live
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
        }


def status_of(target: Target, graph: Graph, registry: Registry) -> DbStatus:
    heads = list(graph.heads)
    if target.url is None:
        return DbStatus(target.name, None, None, heads, None, State.UNCONFIGURED, target.missing)
    url = target.display_url
    try:
        current, running, dirty = read_live(target, registry)
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
    elif pending:
        state, error = State.BEHIND, None
    else:
        state, error = State.UP_TO_DATE, None
    st = DbStatus(target.name, url, cur, heads, pending, state, error)
    st.extra["backend"] = for_url(target.url).name
    return st


def collect(
    registry: Registry,
    env: str | None,
    names: Sequence[str] | None = None,
    *,
    graphs: dict[str, Graph] | None = None,
    max_workers: int = 16,
) -> list[DbStatus]:
    """Status of every (or the named) database of one environment, concurrently."""
    targets = [t for t in registry.targets(env) if names is None or t.name in names]
    graphs = graphs if graphs is not None else graphs_for(registry, [t.name for t in targets])
    if len(targets) <= 1:
        return [status_of(t, graphs[t.name], registry) for t in targets]
    preload_drivers(t.url for t in targets)
    workers = max(1, min(max_workers, len(targets)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda t: status_of(t, graphs[t.name], registry), targets))


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
