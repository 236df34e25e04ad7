"""Small orch projects written into tmp_path: a registry, the repo's env.py, revision files.

Used by the fault tests, which need revisions that fail, sleep or half-apply
on purpose, and fleets shaped for the failure policy.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conftest import REPO, Project


@dataclass
class Rev:
    """One revision: SQL statements run by ``op.execute``, optional Python before them."""

    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    code: str = ""  # Python run first in upgrade(); ``op`` and ``os`` are imported


def rev_id(db: str, i: int) -> str:
    """Readable, unique per database, fits alembic_version's VARCHAR(32)."""
    return f"{db}_{i:04d}"


def write_revision(versions: Path, db: str, i: int, rev: Rev) -> Path:
    down = repr(rev_id(db, i - 1)) if i > 1 else "None"
    labels = repr((db,)) if i == 1 else "None"
    body_up = [textwrap.indent(textwrap.dedent(rev.code).strip(), "    ")] if rev.code else []
    body_up += [f"    op.execute({s!r})" for s in rev.up]
    body_down = [f"    op.execute({s!r})" for s in rev.down]
    path = versions / f"{rev_id(db, i)}.py"
    path.write_text(
        f'"""{db} step {i}"""\n'
        "import os  # noqa: F401\n\n"
        "from alembic import op\n\n"
        f"revision = {rev_id(db, i)!r}\n"
        f"down_revision = {down}\n"
        f"branch_labels = {labels}\n"
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n" + ("\n".join(body_up) or "    pass") + "\n\n\n"
        "def downgrade() -> None:\n" + ("\n".join(body_down) or "    pass") + "\n"
    )
    return path


def make_project(
    root: Path,
    dbs: dict[str, list[Rev]],
    urls: dict[str, str],
    *,
    depends: dict[str, list[str]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Project:
    """A project with databases *dbs* (name -> revisions) in environment ``dev``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "migrations").mkdir(exist_ok=True)
    shutil.copy(REPO / "migrations" / "env.py", root / "migrations" / "env.py")
    shutil.copy(REPO / "migrations" / "script.py.mako", root / "migrations" / "script.py.mako")
    databases: dict[str, Any] = {}
    for name, revs in dbs.items():
        versions = root / "migrations" / name
        versions.mkdir(exist_ok=True)
        for i, rev in enumerate(revs, start=1):
            write_revision(versions, name, i, rev)
        entry: dict[str, Any] = {}
        if depends and depends.get(name):
            entry["depends_on"] = depends[name]
        databases[name] = entry
    registry = {
        "version": 1,
        "default_env": "dev",
        "settings": {"lock_timeout": 10, "connect_timeout": 5, **(settings or {})},
        "databases": databases,
        "environments": {"dev": {"urls": urls}},
    }
    (root / "databases.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    return Project(root)


def table_names(url: str) -> set[str]:
    """Tables of the database at *url* (read with a separate connection)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            return set(inspect(c).get_table_names())
    finally:
        eng.dispose()


def version_of(url: str) -> list[str]:
    """The rows of alembic_version ([] if none or no table)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            if not inspect(c).has_table("alembic_version"):
                return []
            rows = c.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return sorted(str(r) for r in rows)
    finally:
        eng.dispose()


def log_rows(url: str, table: str = "orch_log", *, every: bool = False) -> list[dict[str, Any]]:
    """orch's log rows of steps in insertion order (*every*: the table's version row too)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            if not inspect(c).has_table(table):
                return []
            found = c.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            return [dict(r._mapping) for r in found if every or r.db]
    finally:
        eng.dispose()
