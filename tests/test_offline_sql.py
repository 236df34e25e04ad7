"""upgrade/downgrade --sql: exactly the pending SQL, per database, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

from authoring_support import tables, untouched, url_of
from conftest import Project

CREATE = {
    "core": ["CREATE TABLE users", "CREATE TABLE accounts"],
    "analytics": ["CREATE TABLE events", "CREATE TABLE daily_rollups"],
}


def _sections(stdout: str) -> dict[str, str]:
    """Split the preview into its per-database sections, in order."""
    parts = re.split(r"^-- =+\n-- (\w+) \(", stdout, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_upgrade_all_sql_previews_everything_and_writes_nothing(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "--all", "--sql")
    assert r.exit_code == 0, r.stderr
    sections = _sections(r.stdout)
    assert list(sections) == ["core", "analytics"]  # execution order
    for db, creates in CREATE.items():
        for stmt in creates:
            assert stmt in sections[db]
        assert "CREATE TABLE alembic_version" in sections[db]
    assert "events" not in sections["core"] and "users" not in sections["analytics"]
    assert "-- note:" not in r.stdout  # the reference data steps use op.execute only
    assert "upgrade base -> bd61b77cf8aa, 4 revision(s)" in sections["core"]
    if "postgresql" in url_of(p, "core"):
        assert "BEGIN;" in r.stdout and "SERIAL" in r.stdout  # one transaction per revision
    if "mysql" in url_of(p, "core"):
        assert "AUTO_INCREMENT" in r.stdout
    assert untouched(p)
    # after a real upgrade there is nothing left to run, and no empty BEGIN/COMMIT
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("upgrade", "--all", "--sql")
    assert r.exit_code == 0
    assert r.stdout.count("nothing to run") == 2
    assert "CREATE" not in r.stdout and "BEGIN" not in r.stdout


def test_sql_starts_at_the_live_revision(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "core@+2").exit_code == 0  # 4d2e0c7783c8, d5d862ab0321
    r = p.orch("upgrade", "core", "--sql")
    assert r.exit_code == 0, r.stderr
    assert "upgrade d5d862ab0321 -> bd61b77cf8aa, 2 revision(s)" in r.stdout
    assert "CREATE TABLE users" not in r.stdout
    assert "-- Running upgrade d5d862ab0321 -> 23231312a907" in r.stdout
    assert "CREATE TABLE alembic_version" not in r.stdout
    # +1 counts from the live revision, not from base (the Alembic trap)
    r = p.orch("upgrade", "core@+1", "--sql")
    assert "upgrade d5d862ab0321 -> 23231312a907, 1 revision(s)" in r.stdout
    assert "display_name" in r.stdout and "substr" not in r.stdout
    assert p.orch("status", "--json").json()["databases"][0]["current"] == ["d5d862ab0321"]


def test_downgrade_sql(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "analytics@-1", "--sql")
    assert r.exit_code == 0, r.stderr
    assert "analytics" in r.stdout
    assert "downgrade ce37b359c1da -> 3ac111ed6cf1, 1 revision(s)" in r.stdout
    assert "UPDATE alembic_version SET version_num='3ac111ed6cf1'" in r.stdout
    r = p.orch("downgrade", "analytics@base", "core@base", "--sql")
    assert r.exit_code == 0, r.stderr
    assert list(_sections(r.stdout)) == ["analytics", "core"]  # dependents first
    assert "DROP TABLE users" in r.stdout and "DROP TABLE events" in r.stdout
    assert "users" in tables(url_of(p, "core"))  # nothing ran
    doc = p.orch("status", "--json").json()
    assert [d["state"] for d in doc["databases"]] == ["up_to_date", "up_to_date"]


def test_from_when_the_database_is_unreachable(project: Project) -> None:
    p = project
    p.set_urls(
        "dev",
        {
            "core": "postgresql+psycopg://u:pw-x9@127.0.0.1:1/core",
            "analytics": "sqlite:///var/dev/analytics.db",
        },
    )
    r = p.orch("upgrade", "core", "--sql")
    assert r.exit_code == 1
    assert "--from core@<revision>" in r.stderr and "pw-x9" not in r.stderr
    r = p.orch("upgrade", "core", "--sql", "--from", "d5d8")
    assert r.exit_code == 0, r.stderr
    assert "core (postgresql): upgrade d5d862ab0321 -> bd61b77cf8aa" in r.stdout
    assert "start given by --from" in r.stdout
    assert "ALTER TABLE users ADD COLUMN display_name VARCHAR(100)" in r.stdout
    r = p.orch("upgrade", "--all", "--sql", "--from", "base")
    assert r.exit_code == 2 and "--from DB@REV" in r.stderr
    r = p.orch("upgrade", "--all", "--sql", "--from", "core@base")
    assert r.exit_code == 0, r.stderr
    assert "CREATE TABLE users" in r.stdout and "CREATE TABLE events" in r.stdout
    r = p.orch("upgrade", "core", "--from", "base")
    assert r.exit_code == 2 and "only work with --sql" in r.stderr


def test_out_writes_one_file_per_database(project: Project) -> None:
    p = project
    out = p.root / "review"
    r = p.orch("upgrade", "--all", "--sql", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    files = sorted(f.name for f in out.iterdir())
    assert files == ["01_core.sql", "02_analytics.sql"]
    assert "CREATE TABLE users" in (out / "01_core.sql").read_text()
    assert "CREATE TABLE events" in (out / "02_analytics.sql").read_text()
    assert untouched(p)
    assert p.orch("upgrade", "core").exit_code == 0
    r = p.orch("upgrade", "--all", "--sql", "--out", str(out))
    assert sorted(f.name for f in out.iterdir()) == ["01_analytics.sql"]  # no stale file


def test_a_revision_that_reads_the_database_is_named(project: Project) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("revision", "analytics", "-m", "count events", "--rev-id", "readsdb")
    path = Path(r.stdout.strip())
    text = path.read_text().replace(
        '    """Upgrade schema."""\n    pass',
        '    """Upgrade schema."""\n'
        '    n = op.get_bind().execute(sa.text("SELECT count(*) FROM events")).scalar()\n'
        '    op.execute(f"UPDATE daily_rollups SET count = {n}")',
        1,
    )
    path.write_text(text)
    r = p.orch("upgrade", "--all", "--sql")
    assert r.exit_code == 1
    assert "FAILED at readsdb" in r.stdout
    assert "op.get_bind()" in r.stderr and "readsdb" in r.stderr
    doc = p.orch("upgrade", "--all", "--sql", "--json").json()
    assert doc["exit_code"] == 1
    [an] = [d for d in doc["databases"] if d["name"] == "analytics"]
    assert an["revision"] == "readsdb" and "op.get_bind()" in an["error"]
    # the real upgrade still works online
    assert p.orch("upgrade", "--all").exit_code == 0


def test_sql_json(project: Project) -> None:
    doc = project.orch("upgrade", "--all", "--sql", "--json").json()
    assert doc["schema"] == 1 and doc["sql"] is True and doc["exit_code"] == 0
    assert [d["name"] for d in doc["databases"]] == ["core", "analytics"]
    assert doc["databases"][0]["revisions"][0] == "4d2e0c7783c8"
    assert "CREATE TABLE users" in doc["databases"][0]["sql"]
    assert untouched(project)


def test_get_bind_is_found_in_code_not_in_docstrings(tmp_path: Path) -> None:
    from orch.queries.offline import get_bind_line

    f = tmp_path / "r.py"
    f.write_text('"""Never op.get_bind() here."""\n# op.get_bind()\nx = 1\n')
    assert get_bind_line(str(f)) is None
    f.write_text('"""doc"""\n\ndef upgrade():\n    conn = op.get_bind()\n')
    assert get_bind_line(str(f)) == 4
