"""End-to-end behaviour of the core commands on every backend."""

from __future__ import annotations

from conftest import Project


def test_upgrade_status_downgrade_cycle(backend_project: Project) -> None:
    p = backend_project
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    assert "core" in r.stdout and "done" in r.stdout
    doc = p.orch("status", "--json").json()
    assert doc["schema"] == 1
    assert [d["state"] for d in doc["databases"]] == ["up_to_date", "up_to_date"]
    r = p.orch("downgrade", "analytics@base")
    assert r.exit_code == 0, r.stderr
    states = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert states["core"]["state"] == "up_to_date"
    assert states["analytics"]["state"] == "behind"
    assert states["analytics"]["current"] == []
    assert states["analytics"]["pending"] == 4
    assert p.orch("status", "--check").exit_code == 1
    plan = p.orch("plan", "--all")
    assert plan.exit_code == 0
    assert "analytics" in plan.stdout and "core" not in plan.stdout.split("\n", 1)[1]
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.orch("status", "--check").exit_code == 0
