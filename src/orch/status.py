"""Read-only state of databases and environments.

Reads need no Alembic machinery: the revision graph comes from headers
(:mod:`orch.revisions`) and the version rows from one SELECT, so many
databases are queried concurrently in threads with the connect timeout.
Nothing here writes to a database or creates a file: SQLite files are opened
read-only and a missing one simply has no revision yet.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import errors
from orch.db import (
    MissingSchema,
    NoDatabase,
    backend,
    check_version_schema,
    connect,
    describe_error,
    preload_drivers,
    read_current_readonly,
    read_sqlite_versions,
    transactional_ddl,
)
from orch.errors import DatabaseError, OrchError
from orch.registry import DatabaseSpec, Registry, Target, sqlite_path
from orch.revisions import Graph, load_graph

STATES = (
    "up_to_date",
    "behind",
    "unknown_revision",
    "dirty",
    "running",
    "unreachable",
    "unconfigured",
)


@dataclass
class DbStatus:
    """One database of one environment (an entry of ``status --json``'s ``databases``)."""

    name: str
    url: str | None
    current: list[str] | None
    heads: list[str]
    pending: int | None
    state: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "current": self.current,
            "heads": self.heads,
            "pending": self.pending,
            "state": self.state,
            "error": self.error,
        }


def graphs_for(
    registry: Registry, names: Sequence[str] | None = None, *, warn: bool = True
) -> dict[str, Graph]:
    """Revision graphs of the registry's databases; databases sharing a directory share one.

    A revision id declared in two of the directories read is a warning (see
    :func:`shared_ids`): orch keeps each database's history apart, plain
    ``alembic`` over alembic.ini's ``version_locations`` does not.
    ``warn=False``: the caller reports them itself (``orch check``).
    """
    by_dir: dict[Any, Graph] = {}
    out: dict[str, Graph] = {}
    for db in registry.databases.values():
        if names is not None and db.name not in names:
            continue
        if db.versions not in by_dir:
            by_dir[db.versions] = load_graph(db.versions, db.name)
            by_dir[db.versions].bind_script(_script_of(registry, db))
        graph = by_dir[db.versions]
        out[db.name] = graph if graph.name == db.name else _renamed(graph, db.name)
    sink = errors.warning_sink
    if warn and sink is not None and len(by_dir) > 1:
        for shared in shared_ids(registry, out):
            sink(shared.message)
    return out


def _script_of(registry: Registry, db: DatabaseSpec) -> Callable[[], Any]:
    """The ScriptDirectory that runs *db*'s migrations, built when a target is resolved.

    Kept for the graph's life (one command): databases sharing the directory
    (a fleet) then resolve with one ScriptDirectory, without checking every
    file's state again per database.
    """
    made: list[Any] = []

    def factory() -> Any:
        if not made:
            from orch.alembic_run import script_directory

            made.append(script_directory(registry, db))
        return made[0]

    return factory


@dataclass(frozen=True)
class SharedId:
    """One revision id declared in the version directories of two different databases.

    orch is unaffected: it runs each database with a Config that knows only
    that database's directory.  Plain ``alembic`` over alembic.ini's
    ``version_locations`` sees one id twice, keeps one of the files and can
    upgrade a database to the other database's revision, with exit 0.
    Databases that share one directory (shards) share its ids: not this.
    """

    revision: str
    files: tuple[str, str]
    databases: tuple[tuple[str, ...], tuple[str, ...]]  # the databases of each file's directory

    @property
    def message(self) -> str:
        (a, b), (da, db) = self.files, self.databases
        return (
            f"revision id {self.revision} is declared by two databases' histories: "
            f"{a} ({', '.join(da)}) and {b} ({', '.join(db)}); orch keeps them apart, but plain "
            "'alembic' over alembic.ini's version_locations mixes them up (it can upgrade a "
            "database to the other's revision). Give one of the two a new id, or run these "
            "databases only through orch"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "problem": "shared_revision_id",
            "revision": self.revision,
            "files": list(self.files),
            "databases": [list(d) for d in self.databases],
            "message": self.message,
        }


def shared_ids(registry: Registry, graphs: Mapping[str, Graph]) -> list[SharedId]:
    """Revision ids declared in the directories of two different databases of *graphs*.

    One pass over the ids (a dict insert each), so it costs little next to
    reading the headers.  Files are shown relative to the registry's directory.
    """
    dirs: dict[Path, list[str]] = {}
    for name in graphs:
        dirs.setdefault(registry.databases[name].versions, []).append(name)
    if len(dirs) < 2:
        return []
    groups = list(dirs.values())  # directories by number: an int compares faster than a Path
    owner: dict[str, int] = {}
    found: list[SharedId] = []
    for i, names in enumerate(groups):
        graph = graphs[names[0]]
        for rev in graph.revs:
            first = owner.setdefault(rev, i)
            if first != i:
                other = graphs[groups[first][0]].revs[rev]
                found.append(
                    SharedId(
                        rev,
                        (_shown(registry, other.path), _shown(registry, graph.revs[rev].path)),
                        (tuple(groups[first]), tuple(names)),
                    )
                )
    return found


def _shown(registry: Registry, path: str) -> str:
    try:
        return str(Path(path).relative_to(registry.root))
    except ValueError:
        return path


def _renamed(graph: Graph, name: str) -> Graph:
    clone = object.__new__(Graph)
    clone.__dict__.update(graph.__dict__)
    clone.name = name
    return clone


def read_live(
    target: Target, registry: Registry
) -> tuple[tuple[str, ...], bool, tuple[str, str | None] | None]:
    """(current revisions, lock held, dirty) of one database, read-only."""
    from orch.audit import dirty_revision
    from orch.locks import is_locked

    assert target.url is not None
    path = sqlite_path(target.url)
    if path is not None and not target.db.version_table_schema:
        return _read_live_sqlite(target, target.url, path, registry)
    try:
        conn = connect(target.url, registry.settings.connect_timeout, readonly=True, shared=True)
    except NoDatabase:  # no SQLite file yet; a first run may be creating it right now
        return (), is_locked(None, target.db, target.url), None
    try:
        current = read_current_readonly(conn, target.db)
        if not current:
            check_version_schema(conn, target.db)
        running = is_locked(conn, target.db, target.url)
        dirty = None
        if not transactional_ddl(target.url):
            dirty = dirty_revision(
                conn, registry.settings.log_table, target.db.version_table_schema, target.name
            )
        conn.rollback()
        return current, running, dirty
    finally:
        conn.close()


def _read_live_sqlite(
    target: Target, url: str, path: Path, registry: Registry
) -> tuple[tuple[str, ...], bool, tuple[str, str | None] | None]:
    """read_live for a SQLite file without SQLAlchemy (see db.read_sqlite_versions).

    SQLite has transactional DDL (orch's recipe), so it is never dirty, and
    its migration lock is a file lock that needs no connection.
    """
    from orch.locks import is_locked

    try:
        current = read_sqlite_versions(
            path, target.db.version_table, registry.settings.connect_timeout
        )
    except NoDatabase:  # no file yet; a first run may be creating it right now
        current = ()
    return current, is_locked(None, target.db, url), None


def status_of(target: Target, graph: Graph, registry: Registry) -> DbStatus:
    heads = list(graph.heads)
    if target.url is None:
        return DbStatus(target.name, None, None, heads, None, "unconfigured", target.missing)
    url = target.display_url
    try:
        current, running, dirty = read_live(target, registry)
    except MissingSchema as exc:  # reachable, never migrated: every revision is pending
        return DbStatus(target.name, url, [], heads, len(graph.pending(())), "behind", str(exc))
    except DatabaseError as exc:
        return DbStatus(target.name, url, None, heads, None, "unreachable", str(exc))
    except OrchError:
        raise
    except Exception as exc:
        return DbStatus(target.name, url, None, heads, None, "unreachable", describe_error(exc))
    cur = list(current)
    unknown = graph.unknown(current)
    pending = None if unknown else len(graph.pending(current))
    if running:
        state, error = "running", "a migration holds the lock now"
    elif dirty is not None:
        rev, err = dirty
        state = "dirty"
        from orch.audit import repair_hint

        error = (
            f"revision {rev} failed or was interrupted half-way"
            + (f": {err}" if err else "")
            + f"; {repair_hint(target.name, rev)}"
        )
    elif unknown:
        state = "unknown_revision"
        error = f"revision {', '.join(unknown)} is not in {graph.name}'s directory"
    elif pending:
        state, error = "behind", None
    else:
        state, error = "up_to_date", None
    st = DbStatus(target.name, url, cur, heads, pending, state, error)
    st.extra["backend"] = backend(target.url)
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
