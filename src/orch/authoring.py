"""Writing revisions: ``orch revision`` (plain and ``--autogenerate``).

A database's first revision starts a new lineage (``head=base``) in its own
directory, created on demand, and carries its branch label, so plain
``alembic heads`` over the whole repo shows one labelled head per database.
Autogenerate compares the database's metadata with its *own* live database
in the chosen environment, and writes no file when nothing changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orch.errors import UsageError
from orch.registry import Registry


def new_revision(
    registry: Registry,
    env: str | None,
    name: str,
    message: str,
    *,
    autogenerate: bool = False,
    allow_empty: bool = False,
    rev_id: str | None = None,
) -> Path | None:
    """Create a revision file for database *name*; None when autogenerate found nothing."""
    import io

    from alembic import command

    from orch import alembic_run
    from orch.revisions import load_graph

    db = registry.database(name)
    if rev_id is not None and (len(rev_id) > 32 or not rev_id.replace("_", "").isalnum()):
        raise UsageError(
            f"--rev-id {rev_id!r}: use letters, digits and '_' (at most 32 characters)"
        )
    graph = load_graph(db.versions, db.name)
    first = len(graph) == 0
    if len(graph.heads) > 1:
        raise UsageError(
            f"{name} has {len(graph.heads)} heads ({', '.join(graph.heads)}); "
            f"run 'orch merge {name}' first"
        )
    db.versions.mkdir(parents=True, exist_ok=True)
    cfg = alembic_run.make_config(registry, db, stdout=io.StringIO())
    alembic_run.add_sys_path(registry)
    created: list[Any] = []

    def directives(context: Any, revision: Any, dirs: list[Any]) -> None:
        script = dirs[0]
        if autogenerate and not allow_empty and script.upgrade_ops.is_empty():
            dirs[:] = []
            return
        created.append(script)

    kwargs: dict[str, Any] = {
        "message": message,
        "autogenerate": autogenerate,
        "head": "base" if first else "head",
        "rev_id": rev_id,
        "process_revision_directives": directives,
    }
    if first:
        kwargs["branch_label"] = db.branch
        kwargs["version_path"] = str(db.versions)
    if autogenerate:
        from orch.autogen import autogenerate_revision

        return autogenerate_revision(registry, env, db, cfg, kwargs, created)
    script = command.revision(cfg, **kwargs)
    alembic_run.forget_scripts()
    if script is None:
        return None
    if isinstance(script, list):
        script = script[0]
    return None if script is None else Path(script.path)
