"""Behaviour of the core commands on SQLite, PostgreSQL and MariaDB (one test body each).

Every test runs the reference project (databases ``core`` and ``analytics``,
``analytics`` depends on ``core``) through the real CLI against real
databases, and checks what a user relies on: the version rows, the schema
the revisions built, exit codes and the states ``status`` reports.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import Project

CORE = ["4d2e0c7783c8", "d5d862ab0321", "23231312a907", "bd61b77cf8aa"]
ANALYTICS = ["abdcce646ddc", "a32a37093757", "3ac111ed6cf1", "ce37b359c1da"]


def versions(p: Project, db: str) -> list[str]:
    return p.versions(db)


def tables(p: Project, db: str) -> set[str]:
    return p.tables(db)


def states(p: Project, *args: str) -> dict[str, dict[str, Any]]:
    r = p.orch("status", "--json", *args)
    doc = r.json()
    return {d["name"]: d for d in doc["databases"]}


def test_upgrade_all_builds_both_schemas(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = r.json()
    assert doc["schema"] == 1
    by_name = {d["name"]: d for d in doc["databases"]}
    assert by_name["core"]["outcome"] == "done"
    assert by_name["core"]["applied"] == CORE
    assert by_name["analytics"]["applied"] == ANALYTICS
    assert versions(p, "core") == [CORE[-1]]
    assert versions(p, "analytics") == [ANALYTICS[-1]]
    assert {"users", "accounts"} <= tables(p, "core")
    assert {"events", "daily_rollups"} <= tables(p, "analytics")
    assert "events" not in tables(p, "core")
    st = states(p)
    assert {n: d["state"] for n, d in st.items()} == {
        "core": "up_to_date",
        "analytics": "up_to_date",
    }
    assert st["core"]["current"] == [CORE[-1]] and st["core"]["pending"] == 0

    again = p.orch("upgrade", "--all", "--json")
    assert again.exit_code == 0
    assert {d["outcome"] for d in again.json()["databases"]} == {"unchanged"}


def test_upgrade_relative_and_prefix_targets(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "core@+1").exit_code == 0
    assert versions(p, "core") == [CORE[0]]
    assert p.orch("upgrade", "core@+2").exit_code == 0
    assert versions(p, "core") == [CORE[2]]
    # a unique prefix of a revision id
    r = p.orch("upgrade", "core@bd61")
    assert r.exit_code == 0, r.stderr
    assert versions(p, "core") == [CORE[3]]
    st = states(p)
    assert st["core"]["state"] == "up_to_date"
    assert st["analytics"]["state"] == "behind" and st["analytics"]["pending"] == 4


def test_upgrade_targets_past_head_or_wrong_side_touch_nothing(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "core@+2").exit_code == 0
    for sel in ("core@+3", "core@base", f"core@{CORE[0]}", "core@ffff", "nosuch"):
        r = p.orch("upgrade", sel)
        assert r.exit_code == 2, (sel, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("orch: error:"), r.stderr
    assert versions(p, "core") == [CORE[1]]


def test_downgrade_minus_one_revision_and_base(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "analytics@-1", "--json")
    assert r.exit_code == 0, r.stdout
    assert r.json()["databases"][0]["applied"] == [ANALYTICS[3]]
    assert versions(p, "analytics") == [ANALYTICS[2]]
    # to a revision (by prefix)
    assert p.orch("downgrade", f"analytics@{ANALYTICS[0][:6]}").exit_code == 0
    assert versions(p, "analytics") == [ANALYTICS[0]]
    assert "daily_rollups" not in tables(p, "analytics")
    assert p.orch("downgrade", "analytics@base").exit_code == 0
    assert versions(p, "analytics") == []
    assert "events" not in tables(p, "analytics")
    st = states(p)
    assert st["analytics"]["state"] == "behind"
    assert st["analytics"]["current"] == [] and st["analytics"]["pending"] == 4
    # below base, or an upgrade target, is refused without touching anything
    for sel in ("analytics@-1", "analytics@head"):
        r = p.orch("downgrade", sel)
        assert r.exit_code == 2, (sel, r.stderr)


def test_downgrade_needs_an_explicit_target(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "analytics")
    assert r.exit_code == 2
    assert "analytics@-1" in r.stderr
    assert versions(p, "analytics") == [ANALYTICS[-1]]


def test_stamp_sets_version_without_running(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("stamp", f"core@{CORE[1]}")
    assert r.exit_code == 0, r.stderr
    assert versions(p, "core") == [CORE[1]]
    assert "users" not in tables(p, "core")  # nothing ran
    st = states(p)
    assert st["core"]["state"] == "behind" and st["core"]["pending"] == 2
    assert p.orch("stamp", "core@base").exit_code == 0
    assert versions(p, "core") == []
    assert p.orch("stamp", "core@head").exit_code == 0
    assert versions(p, "core") == [CORE[-1]]


def test_status_unknown_revision(backend_project: Project) -> None:
    from sqlalchemy import text

    p = backend_project
    assert p.orch("upgrade", "core").exit_code == 0
    with p.connect("core") as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'feedfacecafe'"))
        conn.commit()
    st = states(p)
    assert st["core"]["state"] == "unknown_revision"
    assert st["core"]["current"] == ["feedfacecafe"]
    assert "feedfacecafe" in st["core"]["error"]
    assert p.orch("status", "--check").exit_code == 1
    table = p.orch("status")
    assert table.exit_code == 0
    assert re.search(r"core\s+unknown_revision", table.stdout)
    # and nothing runs on top of a revision orch does not know
    r = p.orch("upgrade", "core")
    assert r.exit_code != 0
    assert versions(p, "core") == ["feedfacecafe"]


def test_status_check_gate(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("status", "--check")
    assert r.exit_code == 1
    assert re.search(r"core\s+behind", r.stdout)
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.orch("status", "--check").exit_code == 0


def test_plan_reads_live_revisions_and_writes_nothing(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "core@+1").exit_code == 0
    before = tables(p, "analytics")
    r = p.orch("plan", "--json")
    assert r.exit_code == 0, r.stderr
    steps = {s["name"]: s for s in r.json()["steps"]}
    assert steps["core"]["from"] == [CORE[0]]
    assert steps["core"]["revisions"] == CORE[1:]
    assert steps["analytics"]["revisions"] == ANALYTICS
    assert steps["core"]["level"] == 0 and steps["analytics"]["level"] == 1
    human = p.orch("plan")
    assert human.exit_code == 0
    lines = human.stdout.splitlines()
    assert lines[0].split()[:2] == ["GROUP", "DATABASE"]
    assert [ln.split()[1] for ln in lines[1:]] == ["core", "analytics"]
    # read-only: no version table, no log table appeared
    assert tables(p, "analytics") == before
    assert versions(p, "core") == [CORE[0]]
    assert p.orch("upgrade", "--all").exit_code == 0
    done = p.orch("plan")
    assert "nothing to do" in done.stdout


def test_upgrade_refuses_when_dependency_behind(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "analytics")
    assert r.exit_code == 2
    assert "core" in r.stderr and "--with-deps" in r.stderr
    assert versions(p, "analytics") == [] and versions(p, "core") == []


def test_upgrade_with_deps_brings_dependencies_to_head_first(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "analytics@+1", "--with-deps", "--json")
    assert r.exit_code == 0, r.stdout
    names = [d["name"] for d in r.json()["databases"]]
    assert names == ["core", "analytics"]
    assert versions(p, "core") == [CORE[-1]]
    assert versions(p, "analytics") == [ANALYTICS[0]]


def test_upgrade_ignore_deps_runs_only_the_named_database(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "analytics", "--ignore-deps")
    assert r.exit_code == 0, r.stderr
    assert versions(p, "analytics") == [ANALYTICS[-1]]
    assert versions(p, "core") == []


def test_downgrade_refuses_while_dependents_are_not_at_base(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "core@-1")
    assert r.exit_code == 2
    assert "analytics" in r.stderr and "--force" in r.stderr
    assert versions(p, "core") == [CORE[-1]]
    # both in one run: dependents first
    r = p.orch("downgrade", "core@base", "analytics@base", "--json")
    assert r.exit_code == 0, r.stdout
    assert [d["name"] for d in r.json()["databases"]] == ["analytics", "core"]
    assert versions(p, "core") == [] and versions(p, "analytics") == []


def test_downgrade_force_ignores_dependents(backend_project: Project) -> None:
    p = backend_project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "core@-1", "--force")
    assert r.exit_code == 0, r.stderr
    assert versions(p, "core") == [CORE[2]]
    assert versions(p, "analytics") == [ANALYTICS[-1]]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_upgrade_all_in_parallel_workers_or_inline(backend_project: Project, jobs: str) -> None:
    p = backend_project
    r = p.orch("upgrade", "--all", "--jobs", jobs)
    assert r.exit_code == 0, r.stderr
    assert versions(p, "core") == [CORE[-1]]
    assert versions(p, "analytics") == [ANALYTICS[-1]]
