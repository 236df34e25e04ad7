"""Alembic's API over a fleet in a loop: the lower bound for running each tenant through Alembic.

The fleet floor (:mod:`fleet_floor`) sends the revision's DDL with psycopg
and nothing else.  Any tool that runs a tenant's revision through Alembic
also pays for Alembic itself: an EnvironmentContext and a MigrationContext
per tenant, the revision module's ``upgrade()`` through ``op``, the version
row through SQLAlchemy, and Alembic's read of its version table.  This
script is the shortest correct loop a team could write with Alembic's API:
as many processes as orch's default jobs, the ScriptDirectory built once
per process before the fork; per tenant, for schemas of one database, one
connection per process and ``SET search_path``; for tenant databases, one
Engine and connection per tenant.  No lock, no audit row, no env.py file,
no read of what is pending before it runs.  Same JSON file as the floor,
plus ``"script_location"`` and ``"versions"``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from fleet_floor import fan_out

_SCRIPT: ScriptDirectory | None = None
_CONFIG: Config | None = None


def _upgrade(conn: Any) -> None:
    """One tenant: Alembic's steps to head from the rows it reads, a transaction each."""
    assert _SCRIPT is not None and _CONFIG is not None
    script = _SCRIPT

    def steps(rev: Any, context: Any) -> Any:
        return script._upgrade_revs("heads", rev)

    with EnvironmentContext(_CONFIG, script, fn=steps, destination_rev="heads") as env:
        env.configure(connection=conn, transaction_per_migration=True)
        with env.begin_transaction():
            env.run_migrations()
    conn.commit()


def _schemas(job: dict[str, Any], part: list[str]) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(job["url"], poolclass=NullPool)
    with engine.connect() as conn:
        for schema in part:
            conn.execute(text(f'SET search_path TO "{schema}"'))
            conn.commit()
            _upgrade(conn)


def _databases(job: dict[str, Any], part: list[str]) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    for url in part:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                _upgrade(conn)
        finally:
            engine.dispose()


def main() -> None:
    global _SCRIPT, _CONFIG
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    _CONFIG = Config()
    _CONFIG.set_main_option("script_location", job["script_location"])
    _CONFIG.set_main_option("version_locations", job["versions"])
    _SCRIPT = ScriptDirectory.from_config(_CONFIG)
    _SCRIPT.get_heads()  # the revision map, built before the fork
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401  the dialect, before the fork

    fan_out(job, _schemas, _databases)


if __name__ == "__main__":
    main()
