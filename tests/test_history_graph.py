"""orch history and orch graph."""

from __future__ import annotations

from authoring_support import untouched
from conftest import Project

CORE = ["bd61b77cf8aa", "23231312a907", "d5d862ab0321", "4d2e0c7783c8"]


def test_history_newest_first_with_applied_marks(backend_project: Project) -> None:
    p = backend_project
    doc = p.orch("history", "core", "--json").json()
    assert doc["schema"] == 1
    assert [r["revision"] for r in doc["revisions"]] == CORE
    assert all(r["applied"] is False for r in doc["revisions"])
    assert doc["current"] == [] and doc["heads"] == ["bd61b77cf8aa"]
    assert untouched(p)
    assert p.orch("upgrade", "core@+2").exit_code == 0
    doc = p.orch("history", "core", "--json").json()
    applied = {r["revision"]: r["applied"] for r in doc["revisions"]}
    assert applied == {CORE[0]: False, CORE[1]: False, CORE[2]: True, CORE[3]: True}
    cur = [r for r in doc["revisions"] if r["current"]]
    assert [r["revision"] for r in cur] == [CORE[2]]
    assert doc["revisions"][-1]["branch_labels"] == ["core"]
    assert doc["revisions"][0]["message"].startswith("backfill users.display_name")
    r = p.orch("history", "core")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("core (dev): current d5d862ab0321, head bd61b77cf8aa")
    rows = lines[2:]
    assert [ln.split()[0] for ln in rows] == [CORE[0], CORE[1], "*", "*"]
    assert "head" in rows[0] and "current" in rows[2] and "label core" in rows[3]


def test_history_of_an_unreachable_database_has_no_marks(project: Project) -> None:
    p = project
    p.set_urls(
        "dev",
        {"core": "postgresql+psycopg://u@127.0.0.1:1/x", "analytics": "sqlite:///var/a.db"},
    )
    r = p.orch("history", "core")
    assert r.exit_code == 0
    assert "applied revisions not marked" in r.stderr
    assert r.stdout.splitlines()[2].startswith("?")
    assert p.orch("history", "nope").exit_code == 2


def test_graph_formats(project: Project) -> None:
    p = project
    data = p.registry()
    data["databases"]["billing"] = {"depends_on": ["core"]}
    data["databases"]["reports"] = {"depends_on": ["analytics", "billing"]}
    data["databases"]["audit"] = {}
    p.write_registry(data)
    r = p.orch("graph", "--format", "mermaid")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "graph TD"
    edges = {ln.strip() for ln in lines if "-->" in ln}
    assert edges == {
        "core --> analytics",
        "core --> billing",
        "analytics --> reports",
        "billing --> reports",
    }
    assert "  audit" in lines  # a database without edges is still drawn
    dot = p.orch("graph", "--format", "dot").stdout
    assert '"core" -> "analytics";' in dot and dot.startswith("digraph orch {")
    text = p.orch("graph").stdout.splitlines()
    assert text[0].split() == ["LEVEL", "DATABASE", "DEPENDS", "ON", "DEPENDENTS"]
    assert text[1].split()[:2] == ["0", "core"]
    assert any(ln.split()[:2] == ["2", "reports"] for ln in text)
    doc = p.orch("graph", "--json").json()
    assert {"from": "core", "to": "analytics"} in doc["edges"]
    assert len(doc["edges"]) == 4
