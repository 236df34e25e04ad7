"""Writing revisions: ``orch revision`` (plain and ``--autogenerate``) and ``orch merge``.

A database's first revision starts a new lineage (``head=base``) in its own
directory, created on demand, and carries its branch label, so plain
``alembic heads`` over the whole repo shows one labelled head per database.
Every later revision's parent is that database's single head: the Config
knows only the database's directory, so another database's head can never
be picked.  Autogenerate (:mod:`orch.alembic_bridge.autogen`) compares the database's
metadata with its *own* live database and writes no file when nothing
changed.  Creating a database's directory also adds it to alembic.ini's
``version_locations`` (:mod:`orch.config.alembic_ini`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.alembic_bridge import job as job_mod
from orch.alembic_bridge import runner as alembic_run
from orch.config import alembic_ini
from orch.config.registry import Registry
from orch.config.revisions import RESERVED_REV_IDS, GraphError, load_graph, scan_directory
from orch.errors import MissingVariable, UsageError
from orch.queries.drift import describe

_REV_ID = re.compile(r"^[A-Za-z0-9_]{1,32}$")


@dataclass
class Written:
    """What ``revision`` or ``merge`` did, for the report."""

    database: str
    path: Path | None
    revision: str | None = None
    parents: tuple[str, ...] = ()
    branch_label: str | None = None
    operations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "created": self.path is not None,
            "path": str(self.path) if self.path else None,
            "revision": self.revision,
            "down_revision": list(self.parents),
            "branch_label": self.branch_label,
            "operations": self.operations,
            "notes": self.notes,
        }


def _check_rev_id(rev_id: str | None, registry: Registry, name: str) -> None:
    """Refuse an id Alembic would refuse, cannot store, would read as something else,
    or that another database's directory already has.

    ``head``, ``base`` and the other symbols were accepted, and every later
    ``upgrade core@head`` then meant the symbol: a false ``done``.  A branch
    label as an id is just as ambiguous in a target.  An id another database
    has: orch would keep the two revisions apart, but plain ``alembic`` over
    alembic.ini's ``version_locations`` would not, so it is refused before the
    file exists rather than warned about ever after.
    """

    if rev_id is None:
        return
    # alembic_version.version_num is VARCHAR(32)
    if not _REV_ID.match(rev_id):
        raise UsageError(
            f"--rev-id {rev_id!r}: use letters, digits and '_' (at most 32 characters)"
        )
    if rev_id.lower() in RESERVED_REV_IDS:
        raise UsageError(
            f"--rev-id {rev_id!r}: {', '.join(sorted(RESERVED_REV_IDS))} are Alembic's symbols "
            "for revisions, not ids; choose another id"
        )
    labels = {db.branch for db in registry.databases.values()}
    if rev_id in labels:
        raise UsageError(f"--rev-id {rev_id!r} is a branch label; choose another id")
    own = registry.databases[name].versions
    seen = {own}
    for other in registry.databases.values():
        if other.versions in seen:
            continue
        seen.add(other.versions)
        try:
            revs = scan_directory(other.versions)
        except GraphError:  # that directory's own problem, reported where it is read
            continue
        if rev_id in revs:
            raise UsageError(
                f"--rev-id {rev_id}: database {other.name} already has a revision {rev_id} "
                f"({revs[rev_id].path}); plain 'alembic' over alembic.ini's version_locations "
                "would mix the two up: choose another id"
            )


def new_revision(
    registry: Registry,
    env: str | None,
    name: str,
    message: str,
    *,
    autogenerate: bool = False,
    allow_empty: bool = False,
    rev_id: str | None = None,
) -> Written:
    """Create a revision file for database *name* (``path`` None: autogenerate found nothing)."""
    from alembic import command

    db = registry.database(name)
    _check_rev_id(rev_id, registry, name)
    alembic_run.check_project(registry)  # before any directory is created
    if allow_empty and not autogenerate:
        raise UsageError("--allow-empty only makes sense with --autogenerate")
    graph = load_graph(db.versions, db.name)
    if rev_id is not None and rev_id in graph:
        raise UsageError(f"--rev-id {rev_id}: {name} already has a revision {rev_id}")
    first = len(graph) == 0
    if len(graph.heads) > 1:
        raise UsageError(
            f"{name} has {len(graph.heads)} heads ({', '.join(graph.heads)}); "
            f"run 'orch merge {name}' first"
        )
    if autogenerate:
        # fail on bad metadata or an unusable URL before creating any directory
        from orch.alembic_bridge.autogen import require_metadata

        require_metadata(db, "autogenerate")
        job_mod.load_metadata(registry, db)
        target = registry.target(env, db.name)
        if target.url is None:
            raise MissingVariable(f"{name}: {target.missing}")
    created_dir = not db.versions.is_dir()
    db.versions.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if created_dir:
        note = alembic_ini.add_location(registry, db.versions)
        if note:
            notes.append(note)
    cfg = alembic_run.make_config(registry, db)
    # a revision without autogenerate needs no database: never run env.py for it
    cfg.set_main_option("revision_environment", "false")
    job_mod.add_sys_path(registry)
    kwargs: dict[str, Any] = {
        "message": message,
        "head": "base" if first else "head",
        "rev_id": rev_id,
    }
    label = None
    if first:  # a new lineage: in this directory, labelled with the database's branch
        kwargs["version_path"] = str(db.versions)
        label = db.branch
        kwargs["branch_label"] = label
    operations: list[Any] = []
    try:
        if autogenerate:
            from orch.alembic_bridge.autogen import autogenerate_revision

            path, operations = autogenerate_revision(
                registry, env, db, cfg, {**kwargs, "allow_empty": allow_empty}
            )
        else:
            script = command.revision(cfg, **kwargs)
            if isinstance(script, list):
                script = script[0]
            path = Path(script.path) if script is not None else None
    finally:
        alembic_run.forget_scripts()
        if created_dir and not any(db.versions.iterdir()):
            db.versions.rmdir()  # nothing written: leave no empty directory behind
    written = Written(
        name,
        path,
        branch_label=label if path else None,
        operations=[describe_op(o) for o in operations],
        notes=notes,
    )
    if path is not None:
        from orch.config.revisions import parse_header

        header = parse_header(path)
        if header is not None:
            written.revision = header.revision
            written.parents = header.down
    return written


def merge_heads(
    registry: Registry, name: str, message: str | None = None, *, rev_id: str | None = None
) -> Written:
    """Merge the heads of database *name* into one revision (nothing to do: path None)."""
    from alembic import command

    db = registry.database(name)
    _check_rev_id(rev_id, registry, name)
    graph = load_graph(db.versions, db.name)
    if len(graph.heads) < 2:
        return Written(
            name,
            None,
            notes=[
                f"{name} has {len(graph.heads) or 'no'} head{'s' if not graph.heads else ''}; "
                "nothing to merge"
            ],
        )
    cfg = alembic_run.make_config(registry, db)
    cfg.set_main_option("revision_environment", "false")
    job_mod.add_sys_path(registry)
    heads = list(graph.heads)
    msg = message or f"merge {name} heads {', '.join(h[:12] for h in heads)}"
    try:
        script = command.merge(cfg, heads, message=msg, rev_id=rev_id)
    finally:
        alembic_run.forget_scripts()
    if script is None:  # pragma: no cover - only a post-write hook can drop it
        raise UsageError(f"{name}: Alembic wrote no merge revision")
    path = Path(script.path)
    return Written(name, path, revision=script.revision, parents=tuple(heads))


def describe_op(diff: Any) -> str:
    """One line for an autogenerate/compare diff tuple (see :mod:`orch.queries.drift`)."""

    return str(describe(diff)["text"])
