"""The state a plan starts from: revision graphs bound to the ScriptDirectory that
runs them, and each database's live version rows, lock and dirty mark.

Shared by the read side (``status``) and the write side (the executor reads
again under the lock), so both see one truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch import errors
from orch.backends import for_url
from orch.backends.postgresql import advisory_key
from orch.backends.sqlite import sqlite_path
from orch.config.registry import DatabaseSpec, Registry, Target
from orch.config.revisions import Graph, load_graph, requirements
from orch.store.audit import (
    HASH_DIRECTIONS,
    dirty_revision,
    recorded_hashes,
    recorded_hashes_sqlite,
)
from orch.store.db import (
    NoDatabase,
    check_version_schema,
    connect,
    read_current_readonly,
)
from orch.store.locks import is_locked


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
        out[db.name] = graph if graph.name == db.name else graph.renamed(db.name)
    if names is None:  # the whole registry: a broken orch_requires is an error (exit 2)
        requirements(out, [*registry.databases, *registry.left_out])
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
            from orch.alembic_bridge.runner import script_directory

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


@dataclass(frozen=True)
class Live:
    """What one read-only look at a database found (see :func:`read_live_full`)."""

    current: tuple[str, ...]
    running: bool  # a migration holds its lock now
    dirty: tuple[str, str | None] | None  # (revision, error) of a half-applied revision
    #: revision -> the sha256 its file had when it ran here (or was adopted, accepted)
    recorded: Mapping[str, str]


def read_live(
    target: Target, registry: Registry
) -> tuple[tuple[str, ...], bool, tuple[str, str | None] | None]:
    """(current revisions, lock held, dirty) of one database, read-only."""
    live = read_live_full(target, registry, hashes=False)
    return live.current, live.running, live.dirty


def read_live_full(target: Target, registry: Registry, *, hashes: bool = True) -> Live:
    """The live revisions, lock, dirty mark and (*hashes*) recorded file hashes, read-only."""

    assert target.url is not None
    b = for_url(target.url)
    log_table = registry.settings.log_table
    try:
        direct = b.read_versions_directly(
            target.db.version_table_schema,
            target.db.version_table,
            registry.settings.connect_timeout,
        )
    except NoDatabase:  # no file yet; a first run may be creating it right now
        direct = ()
    path = sqlite_path(target.url)
    if direct is not None:
        # read without SQLAlchemy (SQLite: see orch.backends.sqlite.read_sqlite_versions);
        # such a backend has transactional DDL, so it is never dirty, and a lock that
        # needs no connection
        recorded: Mapping[str, str] = {}
        if hashes and direct and path is not None:
            timeout = registry.settings.connect_timeout
            recorded = recorded_hashes_sqlite(path, log_table, target.name, timeout)
        return Live(direct, is_locked(None, target.db, target.url), None, recorded)
    try:
        conn = connect(target.url, registry.settings.connect_timeout, readonly=True, shared=True)
    except NoDatabase:  # no SQLite file yet; a first run may be creating it right now
        return Live((), is_locked(None, target.db, target.url), None, {})
    try:
        schema = target.db.version_table_schema
        current = read_current_readonly(conn, target.db)
        if not current:
            check_version_schema(conn, target.db)
        running = is_locked(conn, target.db, target.url)
        dirty = None
        if not b.transactional_ddl:  # a failed revision may have left DDL behind
            dirty = dirty_revision(conn, log_table, schema, target.name)
        recorded = {}
        if hashes and current:
            recorded = recorded_hashes(conn, log_table, schema, target.name)
        conn.rollback()
        return Live(current, running, dirty, recorded)
    finally:
        conn.close()


def read_live_schemas(
    targets: Sequence[Target],
    registry: Registry,
    *,
    hashes_when: Callable[[Target, tuple[str, ...]], bool] | None = None,
) -> dict[str, Live]:
    """:func:`read_live_full` of tenants that are schemas of one PostgreSQL database, batched.

    A fleet of 1,000 schemas read one tenant at a time cost a connection
    checkout and five round trips per tenant (18 s of a 91 s ``upgrade
    --all``).  Here one connection asks the catalog once which schemas have
    the version table and the audit table's ``sha256`` column, then reads
    every version table, the advisory locks held and the recorded hashes in
    a few UNION ALL queries.  Only tenants whose schema and version table
    exist are answered; the others (and everything, if any query fails) are
    left to :func:`read_live_full`, so every message stays its own.
    *targets* share one URL, version table and audit table.  *hashes_when*:
    read a tenant's recorded hashes only when it says so for the tenant and
    its version rows (the others' come back empty): a run's read before it
    starts needs them only for tenants at head.
    """
    from sqlalchemy import bindparam, text

    if len(targets) < 2:
        return {}
    url = targets[0].url
    assert url is not None
    vt = targets[0].db.version_table
    log_table = registry.settings.log_table
    try:
        conn = connect(url, registry.settings.connect_timeout, readonly=True, shared=True)
    except Exception:
        return {}
    try:
        quote = conn.dialect.identifier_preparer.quote_identifier
        schemas = sorted({str(t.db.version_table_schema) for t in targets})
        found = conn.execute(
            text(
                "SELECT n.nspname, "
                "EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
                "WHERE c.relnamespace = n.oid AND c.relname = :vt), "
                "EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a "
                "ON a.attrelid = c.oid WHERE c.relnamespace = n.oid AND c.relname = :log "
                "AND a.attname = 'sha256' AND NOT a.attisdropped) "
                "FROM pg_catalog.pg_namespace n WHERE n.nspname IN :schemas"
            ).bindparams(bindparam("schemas", expanding=True)),
            {"vt": vt, "log": log_table, "schemas": schemas},
        ).all()
        has_vt = {str(r[0]) for r in found if r[1]}
        has_hash = {str(r[0]) for r in found if r[2]}
        read = [t for t in targets if t.db.version_table_schema in has_vt]
        current: dict[int, list[str]] = {i: [] for i in range(len(read))}
        for start in range(0, len(read), 500):
            part = range(start, min(start + 500, len(read)))
            sql = " UNION ALL ".join(
                f"SELECT {i} AS i, version_num FROM "
                f"{quote(str(read[i].db.version_table_schema))}.{quote(vt)}"
                for i in part
            )
            for i, rev in conn.execute(text(sql)):
                current[int(i)].append(str(rev))
        locks = {
            (int(hi), int(lo))
            for hi, lo in conn.execute(
                text(
                    "SELECT classid, objid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = "
                    "current_database()) AND objsubid = 1"
                )
            )
        }
        recorded: dict[int, dict[str, str]] = {i: {} for i in range(len(read))}
        hashed = [
            i
            for i, t in enumerate(read)
            if current[i]
            and t.db.version_table_schema in has_hash
            and (hashes_when is None or hashes_when(t, tuple(sorted(current[i]))))
        ]
        directions = ", ".join(f"'{d}'" for d in HASH_DIRECTIONS)
        for start in range(0, len(hashed), 500):
            chunk = hashed[start : start + 500]
            sql = " UNION ALL ".join(
                f"SELECT {i} AS i, id, revision, sha256 FROM "
                f"{quote(str(read[i].db.version_table_schema))}.{quote(log_table)} "
                f"WHERE db = :db{i} AND sha256 IS NOT NULL AND outcome = 'ok' "
                f"AND direction IN ({directions})"
                for i in chunk
            )
            rows = conn.execute(
                text(f"SELECT i, revision, sha256 FROM ({sql}) AS h ORDER BY i, id"),
                {f"db{i}": read[i].name for i in chunk},
            )
            for i, rev, digest in rows:
                if rev:
                    recorded[int(i)][str(rev)] = str(digest)
        conn.rollback()
    except Exception:
        return {}
    finally:
        conn.close()
    out: dict[str, Live] = {}
    for i, t in enumerate(read):
        unsigned = advisory_key(t.db.version_table_schema, vt) & 0xFFFFFFFFFFFFFFFF
        running = (unsigned >> 32, unsigned & 0xFFFFFFFF) in locks
        out[t.name] = Live(tuple(sorted(current[i])), running, None, recorded[i])
    return out


def edited_revisions(
    graph: Graph, current: Sequence[str], recorded: Mapping[str, str]
) -> list[str]:
    """The revisions applied at *current* whose file no longer has the hash recorded for it.

    A revision with no recorded hash (applied before orch recorded them; orch
    adopts it at its next write) is not edited; nor is one whose file cannot
    be read now.  In apply order.
    """
    if not recorded:
        return []
    applied = graph.ancestors(c for c in current if c in graph)
    edited = set()
    for rev in applied:
        was = recorded.get(rev)
        if was is None:
            continue
        now = graph.sha256(rev)
        if now is not None and now != was:
            edited.add(rev)
    return graph.ordered(edited)


def unrecorded_revisions(
    graph: Graph, current: Sequence[str], recorded: Mapping[str, str]
) -> dict[str, str]:
    """Revisions applied at *current* with no recorded hash -> their file's hash now.

    What the next write under the lock adopts as the baseline.
    """
    applied = graph.ancestors(c for c in current if c in graph)
    out: dict[str, str] = {}
    for rev in graph.ordered(applied):
        if rev in recorded:
            continue
        digest = graph.sha256(rev)
        if digest is not None:
            out[rev] = digest
    return out
