"""orch check: drift between models and live schema, read-only, with CI exit codes."""

from __future__ import annotations

from authoring_support import TAGS_MODEL, models_module, untouched
from conftest import Project


def test_check_before_and_after_upgrade(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("check")
    assert r.exit_code == 1
    assert "add_table users" in r.stdout and "add_table events" in r.stdout
    assert "upgrade first?" in r.stdout  # drift explained by pending revisions
    assert untouched(p)  # read-only: no version table, no orch_log, no SQLite file
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("check")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "clean" in r.stdout


def test_check_lists_each_difference_as_json(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    models_module(p, extra_core=TAGS_MODEL + "\nAccount.__table__.c.plan.type.length = 48\n")
    r = p.orch("check", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert doc["schema"] == 1 and doc["exit_code"] == 1
    dbs = {d["name"]: d for d in doc["databases"]}
    assert dbs["analytics"]["state"] == "clean"
    core = dbs["core"]
    assert core["state"] == "drift"
    ops = {(d["op"], d.get("table"), d.get("column")) for d in core["differences"]}
    assert ("add_table", "tags", None) in ops
    assert ("modify_type", "accounts", "plan") in ops
    [typ] = [d for d in core["differences"] if d["op"] == "modify_type"]
    assert "32" in typ["database"] and "48" in typ["models"]
    # only one database asked for
    r = p.orch("check", "analytics")
    assert r.exit_code == 0 and "core" not in r.stdout


def test_database_without_metadata_is_not_checkable(project: Project) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    data = p.registry()
    del data["databases"]["analytics"]["metadata"]
    p.write_registry(data)
    r = p.orch("check")
    assert r.exit_code == 0
    assert "not_checkable" in r.stdout
    r = p.orch("check", "analytics")  # asked for by name: it cannot answer
    assert r.exit_code == 2
    doc = p.orch("check", "--json").json()
    assert {d["name"]: d["state"] for d in doc["databases"]} == {
        "core": "clean",
        "analytics": "not_checkable",
    }


def test_check_exit_codes_for_unreachable_and_unconfigured(project: Project) -> None:
    p = project
    r = p.orch("check", "--env", "staging")
    assert r.exit_code == 2
    assert "STAGING_CORE_URL" in r.stdout
    p.set_urls(
        "dev",
        {
            "core": "postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/nope",
            "analytics": "sqlite:///var/dev/analytics.db",
        },
    )
    r = p.orch("check", "--json")
    assert r.exit_code == 1
    assert "s3cret-pw" not in r.stdout + r.stderr
    states = {d["name"]: d["state"] for d in r.json()["databases"]}
    assert states["core"] == "unreachable"


def test_check_warns_when_alembic_ini_disagrees(project: Project) -> None:
    p = project
    ini = p.root / "alembic.ini"
    ini.write_text(ini.read_text().replace(":%(here)s/migrations/analytics", ""))
    r = p.orch("check")
    assert "version_locations does not list migrations/analytics" in r.stderr
    doc = p.orch("check", "--json").json()
    assert any("migrations/analytics" in w for w in doc["warnings"])


def test_a_comparison_that_breaks_is_failed_not_unreachable(project: Project) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    models_module(
        p,
        extra_core='''
from sqlalchemy.types import UserDefinedType


class Fussy(UserDefinedType[str]):
    """A type that cannot say what it is in SQL (no get_col_spec)."""

    cache_ok = True


Account.__table__.c.plan.type = Fussy()
''',
    )
    doc = p.orch("check", "--json").json()
    states = {d["name"]: d for d in doc["databases"]}
    assert states["core"]["state"] == "failed"
    assert states["core"]["error"].startswith("comparison failed: ")
    assert states["analytics"]["state"] == "clean"
    assert doc["exit_code"] == 1
