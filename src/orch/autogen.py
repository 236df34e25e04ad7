"""Autogenerate and drift, database by database, against that database's live schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orch.errors import UsageError
from orch.registry import DatabaseSpec, Registry


def autogenerate_revision(
    registry: Registry,
    env: str | None,
    db: DatabaseSpec,
    cfg: Any,
    kwargs: dict[str, Any],
    created: list[Any],
) -> Path | None:
    """Run ``alembic revision --autogenerate`` for *db* on a read-only view of its database.

    env.py gets the connection through the job; a database that does not exist
    yet compares as empty.
    """
    from alembic import command

    from orch import alembic_run
    from orch.db import NoDatabase, connect

    if not db.metadata:
        raise UsageError(
            f"{db.name} has no 'metadata' in the registry; autogenerate needs the models "
            f"(databases.{db.name}.metadata: module:attribute)"
        )
    target = registry.target(env, db.name)
    if target.url is None:
        raise UsageError(f"{db.name}: {target.missing}")
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    try:
        conn = connect(target.url, registry.settings.connect_timeout, readonly=True)
    except NoDatabase:
        # a SQLite file that does not exist yet: compare with an empty in-memory database
        conn = create_engine("sqlite://", poolclass=NullPool).connect()
    try:
        job = alembic_run.Job(registry, db, target.url, connection=conn)
        cfg.attributes["orch"] = job
        script = command.revision(cfg, **kwargs)
        conn.rollback()
    finally:
        conn.close()
    alembic_run.forget_scripts()
    if not created or script is None:
        return None
    if isinstance(script, list):
        script = script[0]
    return None if script is None else Path(script.path)
