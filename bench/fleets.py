"""Benchmark scenarios for tenant fleets (``databases.<name>.tenants``), run by bench/run.py.

Two fleets on the PostgreSQL server, each tenant one revision behind:

* N tenants as schemas of one database (``schema: "tenant_{tenant}"``);
* M tenants as databases (``{tenant}`` in the URL).

Each is compared with :mod:`fleet_floor` (psycopg, the same DDL and version
row update, one transaction per revision, as many processes as orch's
default jobs), with :mod:`fleet_alembic` (Alembic's API in a loop over the
same tenants and processes: what running each tenant through Alembic costs
before any lock, audit row or plan; the ALEMBIC LOOP column), and, with
nothing pending, ``upgrade --all`` with ``status``.
Peak memory and the most PostgreSQL connections at once are recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from projectgen import LOGGING_INI, ROOT

FLOOR = Path(__file__).resolve().parent / "fleet_floor.py"
ALEMBIC = Path(__file__).resolve().parent / "fleet_alembic.py"
REV1, REV2 = "f1ee70000001", "f1ee70000002"
DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)"

REVISION = '''"""{doc}"""
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = {labels!r}
depends_on = None


def upgrade() -> None:
{up}


def downgrade() -> None:
{down_sql}
'''


def orch_jobs(n: int) -> int:
    """orch's default jobs for a run of *n* databases (execute.default_jobs, no settings.jobs)."""
    return max(1, min(n, (os.cpu_count() or 2) * 2, 8))


def make_fleet(root: Path, url: str, tenants: Sequence[str], *, schema: bool) -> Path:
    """A project with one fleet ``tenant`` of two revisions; the tenants in tenants.txt."""
    if root.exists():
        shutil.rmtree(root)
    mig = root / "migrations"
    (mig / "tenant").mkdir(parents=True)
    shutil.copy(ROOT / "migrations" / "env.py", mig / "env.py")
    shutil.copy(ROOT / "migrations" / "script.py.mako", mig / "script.py.mako")
    (mig / "tenant" / f"{REV1}_start.py").write_text(
        REVISION.format(
            doc="start", rev=REV1, down=None, labels=("tenant",), up="    pass", down_sql="    pass"
        )
    )
    (mig / "tenant" / f"{REV2}_items.py").write_text(
        REVISION.format(
            doc="create items",
            rev=REV2,
            down=REV1,
            labels=None,
            up=f"    op.execute({DDL!r})",
            down_sql="    op.execute('DROP TABLE items')",
        )
    )
    (root / "tenants.txt").write_text("\n".join(tenants) + "\n")
    lines = [
        "version: 1",
        "default_env: bench",
        "settings:",
        "  connect_timeout: 5",
        "  lock_timeout: 120",
        "databases:",
        "  tenant:",
        "    versions: migrations/tenant",
        "    tenants: {file: tenants.txt}",
    ]
    if schema:
        lines.append('    schema: "tenant_{tenant}"')
    lines += ["environments:", "  bench:", "    urls:", f"      tenant: {url}"]
    (root / "databases.yaml").write_text("\n".join(lines) + "\n")
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n" + LOGGING_INI
    )
    return root


def _setup_sql(schema: str | None) -> str:
    """A tenant one revision behind: the version row at REV1, no items table (idempotent)."""
    q = f'"{schema}".' if schema else ""
    create = f'CREATE SCHEMA IF NOT EXISTS "{schema}"; ' if schema else ""
    return (
        f"{create}DROP TABLE IF EXISTS {q}items; "
        f"CREATE TABLE IF NOT EXISTS {q}alembic_version (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)); "
        f"DELETE FROM {q}alembic_version; INSERT INTO {q}alembic_version VALUES ('{REV1}');"
    )


def scenarios(
    pg: Any,
    out: Path,
    env: dict[str, str],
    repeat: int,
    schemas: int,
    databases: int,
    *,
    compare: Callable[..., Any],
    variant: Callable[..., Any],
    run_once: Callable[..., Any],
    row: Callable[..., Any],
    rows: list[Any],
    goals: list[tuple[str, str, str, bool]],
    progress: Callable[[str], None],
) -> None:
    """Append the fleet rows and goals (see the module docstring)."""
    orch = [sys.executable, "-m", "orch"]
    watch = pg.connections
    for kind, n in (("schemas", schemas), ("databases", databases)):
        if not n:
            continue
        tenants = [f"t{i:04d}" for i in range(n)]
        jobs = orch_jobs(n)
        if kind == "schemas":
            progress(f"fleet: {n} tenants as schemas of one PostgreSQL database (creating)")
            (db,) = pg.create(1, "sch")
            url = pg.url_of(db)
            script = "".join(_setup_sql(f"tenant_{t}") for t in tenants)

            def reset_schemas(db: str = db, script: str = script) -> None:
                pg.run_in(db, script)

            reset: Callable[[], None] = reset_schemas

            job: dict[str, Any] = {"url": url, "schemas": [f"tenant_{t}" for t in tenants]}
        else:
            progress(f"fleet: {n} tenants as PostgreSQL databases (creating)")
            names = pg.create(n, "fdb")  # prefix + fdb_000 ...
            tenants = [name.removeprefix(pg.prefix + "fdb_") for name in names]  # 000, 001, ...
            url = pg.url_of(pg.prefix + "fdb_TENANT").replace("TENANT", "{tenant}")
            script = _setup_sql(None)

            def reset_databases(names: list[str] = names, script: str = script) -> None:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(8) as ex:
                    list(ex.map(lambda each: pg.run_in(each, script), names))

            reset = reset_databases

            job = {"urls": [pg.url_of(name) for name in names]}
        root = make_fleet(out / f"fleet-{kind}", url, tenants, schema=kind == "schemas")
        job.update({"jobs": jobs, "ddl": DDL, "from": REV1, "to": REV2})
        (root / "floor.json").write_text(json.dumps(job))
        floor = [sys.executable, str(FLOOR), str(root / "floor.json")]
        job.update(
            {
                "script_location": str(root / "migrations"),
                "versions": str(root / "migrations" / "tenant"),
            }
        )
        (root / "alembic.json").write_text(json.dumps(job))
        loop = [sys.executable, str(ALEMBIC), str(root / "alembic.json")]
        progress(f"fleet {kind}: upgrade --all vs floor")
        f = compare(
            {
                "orch": variant(
                    lambda root=root: run_once([*orch, "upgrade", "--all"], root, env),
                    reset,
                    watch,
                ),
                "floor": variant(lambda floor=floor, root=root: run_once(floor, root, env), reset),
                "alembic": variant(lambda loop=loop, root=root: run_once(loop, root, env), reset),
            },
            repeat,
        )
        progress(f"fleet {kind}: nothing pending, upgrade --all vs status")
        g = compare(
            {
                "noop": variant(
                    lambda root=root: run_once([*orch, "upgrade", "--all"], root, env),
                    None,
                    watch,
                ),
                "status": variant(
                    lambda root=root: run_once([*orch, "status"], root, env), None, watch
                ),
            },
            repeat,
        )
        what = f"{n} tenants as {kind}"
        rows.append(row(f"upgrade --all, {what}, 1 pending", f["orch"], f["alembic"], f["floor"]))
        rows.append(row(f"upgrade --all, {what}, nothing pending", g["noop"]))
        rows.append(row(f"status, {what}", g["status"]))
        r = f["orch"].seconds / f["floor"].seconds
        goals.append((f"fleet {what}: upgrade vs floor", f"{r:.2f}x", "<= 2.00x", r <= 2))
        r = g["noop"].seconds / g["status"].seconds
        goals.append(
            (f"fleet {what}: nothing pending, upgrade vs status", f"{r:.2f}x", "<= 1.50x", r <= 1.5)
        )
        peak = max(f["orch"].peak_mb, g["noop"].peak_mb, g["status"].peak_mb)
        goals.append((f"fleet {what}: peak memory", f"{peak:.0f} MB", "<= 250 MB", peak <= 250))
        conns = max(x.connections or 0 for x in (f["orch"], g["noop"], g["status"]))
        goals.append(
            (
                f"fleet {what}: most PostgreSQL connections",
                str(conns),
                f"<= {jobs + 16} (jobs {jobs} + 16)",
                conns <= jobs + 16,
            )
        )
