"""Which revision modules a migration imports: only the ones it runs.

orch builds Alembic's revision map from the revision headers (the same
reader status and plan use) and imports a module when Alembic runs it.  What
a user gets from that: an old, long-applied revision that imports code the
application has since deleted no longer breaks every later upgrade, and a
long history costs no imports at all.  A file whose code disagrees with its
header is stopped before it runs anything.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Project

CORE_HEAD = "bd61b77cf8aa"
CORE_FIRST = "4d2e0c7783c8"
NEW_REV = "1a2b3c4d5e6f"


def write_revision(p: Project, rev: str, down: str, header_extra: str = "") -> Path:
    path = p.root / "migrations" / "core" / f"{rev}_loading.py"
    path.write_text(
        f'''"""loading test {rev}"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None
{header_extra}

def upgrade() -> None:
    op.create_table("t_{rev}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("t_{rev}")
'''
    )
    return path


def versions(p: Project) -> list[str]:
    con = sqlite3.connect(p.root / "var" / "dev" / "core.db")
    try:
        return [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    finally:
        con.close()


def core_tables(p: Project) -> set[str]:
    con = sqlite3.connect(p.root / "var" / "dev" / "core.db")
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def test_an_applied_revision_that_no_longer_imports_does_not_block_later_upgrades(
    project: Project,
) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    # the first revision now imports a module the application has deleted
    first = next((p.root / "migrations" / "core").glob(f"{CORE_FIRST}_*.py"))
    first.write_text(first.read_text() + "\nimport shop.models_removed_long_ago  # noqa\n")
    write_revision(p, NEW_REV, CORE_HEAD)

    r = p.orch("upgrade", "core")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert versions(p) == [NEW_REV] and f"t_{NEW_REV}" in core_tables(p)
    r = p.orch("downgrade", f"core@{CORE_HEAD}", "--force")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert versions(p) == [CORE_HEAD] and f"t_{NEW_REV}" not in core_tables(p)

    # running that revision itself still imports it, and says why it cannot
    r = p.orch("downgrade", "core@base", "--force")
    assert r.exit_code == 1
    assert "shop.models_removed_long_ago" in r.stdout + r.stderr


def test_a_revision_whose_code_disagrees_with_its_header_stops_before_running(
    project: Project,
) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    path = write_revision(p, NEW_REV, CORE_HEAD, header_extra=f'down_revision = "{CORE_FIRST}"')

    r = p.orch("upgrade", "core", "--json")
    assert r.exit_code == 1
    (core,) = r.json()["databases"]
    assert core["outcome"] == "failed" and core["applied"] == []
    assert str(path) in core["error"] and "down_revision" in core["error"]
    assert "plain literal" in core["error"]
    # Alembic loads the revisions of a path while planning it: nothing ran
    assert versions(p) == [CORE_HEAD] and f"t_{NEW_REV}" not in core_tables(p)
