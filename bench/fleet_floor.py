"""The physical floor for migrating a fleet: psycopg, the same DDL, nothing else.

Each of ``--jobs`` processes takes its share of the tenants and, per tenant,
runs the pending revision's DDL and the version-row update in one
transaction (one transaction per revision, as orch runs them): schemas of one
database over one connection per process (``SET search_path``), or one
connection per tenant database.  No registry, no lock, no audit row, no
Alembic.  Reads a JSON file: ``{"jobs": N, "ddl": SQL, "from": REV, "to":
REV, "schemas": [...], "url": URL}`` or with ``"urls": [...]`` instead of
``schemas``/``url``.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any

#: one process's share of the tenants
Work = Callable[[dict[str, Any], list[str]], None]


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _schemas(job: dict[str, Any], part: list[str]) -> None:
    import psycopg

    with psycopg.connect(_conninfo(job["url"])) as conn:
        for schema in part:
            with conn.transaction():
                conn.execute(f'SET search_path TO "{schema}"')
                conn.execute(job["ddl"])
                conn.execute(
                    "UPDATE alembic_version SET version_num = %s WHERE version_num = %s",
                    (job["to"], job["from"]),
                )


def _databases(job: dict[str, Any], part: list[str]) -> None:
    import psycopg

    for url in part:
        with psycopg.connect(_conninfo(url)) as conn, conn.transaction():
            conn.execute(job["ddl"])
            conn.execute(
                "UPDATE alembic_version SET version_num = %s WHERE version_num = %s",
                (job["to"], job["from"]),
            )


def fan_out(job: dict[str, Any], schemas: Work, databases: Work) -> None:
    """Split the job's tenants over ``jobs`` processes running *schemas* or *databases*
    (a part each); exit 1 if any of them failed.  :mod:`fleet_alembic` shares it."""
    items = job.get("schemas") or job["urls"]
    work = schemas if "schemas" in job else databases
    n = max(1, min(int(job["jobs"]), len(items)))
    parts = [items[i::n] for i in range(n)]
    procs = [multiprocessing.Process(target=work, args=(job, p)) for p in parts]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        sys.exit(1)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    fan_out(job, _schemas, _databases)


if __name__ == "__main__":
    main()
