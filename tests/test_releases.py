"""Releases across databases (issue 16): requirements between revisions of different
databases (``orch_requires``), interleaved runs, downgrades that respect them, release tags.

The A-B-A project: core ``r1``; analytics ``a1`` requires ``core@r1``; core ``r2``
requires ``analytics@a1``.  From base, an upgrade of everything must run r1, a1, r2
in that order, which no database-level order can do.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, Project
from orch.config.releases import Release, add_release, load_releases
from orch.config.revisions import GraphError, Rev, requirements

# ---------------------------------------------------------------- project helpers


def write_rev(
    versions: Path,
    rev: str,
    down: str | None,
    *,
    requires: Sequence[str] = (),
    table: str | None = None,
) -> Path:
    """A revision creating (and on downgrade dropping) table ``t_<rev>``."""
    versions.mkdir(parents=True, exist_ok=True)
    table = table or f"t_{rev}"
    req = f"orch_requires = {tuple(requires)!r}\n" if requires else ""
    path = versions / f"{rev}.py"
    path.write_text(
        f'"""{rev}"""\n'
        "from pathlib import Path\n\n"
        "from alembic import op\n\n"
        "TRACE = Path(__file__).resolve().parents[2] / 'trace.txt'\n"
        f"revision = {rev!r}\n"
        f"down_revision = {down!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
        f"{req}\n\n"
        "def upgrade() -> None:\n"
        f"    op.execute('CREATE TABLE {table} (id INTEGER PRIMARY KEY)')\n"
        f"    with TRACE.open('a') as f:\n        f.write('up {rev}\\n')\n\n\n"
        "def downgrade() -> None:\n"
        f"    op.execute('DROP TABLE {table}')\n"
        f"    with TRACE.open('a') as f:\n        f.write('down {rev}\\n')\n"
    )
    return path


def aba_project(root: Path, urls: dict[str, str], *, depends: bool = True) -> Project:
    """core r1; analytics a1 requires core@r1; core r2 requires analytics@a1."""
    root.mkdir(parents=True, exist_ok=True)
    mig = root / "migrations"
    mig.mkdir(exist_ok=True)
    shutil.copy(REPO / "migrations" / "env.py", mig / "env.py")
    shutil.copy(REPO / "migrations" / "script.py.mako", mig / "script.py.mako")
    write_rev(mig / "core", "r1", None)
    write_rev(mig / "analytics", "a1", None, requires=["core@r1"])
    write_rev(mig / "core", "r2", "r1", requires=["analytics@a1"])
    registry: dict[str, Any] = {
        "version": 1,
        "default_env": "dev",
        "settings": {"lock_timeout": 10, "connect_timeout": 5, "log_table": "orch_log"},
        "databases": {"core": {}, "analytics": {"depends_on": ["core"]} if depends else {}},
        "environments": {"dev": {"urls": urls}},
    }
    (root / "databases.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    return Project(root)


@pytest.fixture
def aba(tmp_path: Path, backend: str, make_db: Callable[..., str]) -> Project:
    if backend == "sqlite":
        urls = {"core": "sqlite:///var/core.db", "analytics": "sqlite:///var/analytics.db"}
    else:
        urls = {"core": make_db(backend), "analytics": make_db(backend)}
    return aba_project(tmp_path / "proj", urls)


def sqlite_aba(tmp_path: Path) -> Project:
    urls = {"core": "sqlite:///var/core.db", "analytics": "sqlite:///var/analytics.db"}
    return aba_project(tmp_path / "proj", urls)


def graphs_of(project: Project) -> dict[str, Any]:
    from orch.config.registry import load_registry
    from orch.planning.live import graphs_for

    return graphs_for(load_registry(project.registry_path))


# ---------------------------------------------------------------- headers and checks


def test_orch_requires_is_read_with_the_header(tmp_path: Path) -> None:
    from orch.config.revisions import parse_header

    path = write_rev(tmp_path, "a1", None, requires=["core@r1", "billing@b2"])
    rev = parse_header(path)
    assert rev is not None and rev.requires == ("core@r1", "billing@b2")
    one = tmp_path / "one.py"
    one.write_text("revision = 'x'\ndown_revision = None\norch_requires = 'core@r1'\n")
    assert parse_header(one) == Rev("x", path=str(one), requires=("core@r1",))
    bad = tmp_path / "bad.py"
    bad.write_text("revision = 'y'\ndown_revision = None\norch_requires = ('core',)\n")
    with pytest.raises(GraphError, match=r"bad\.py: orch_requires 'core': expected"):
        parse_header(bad)


def test_requirements_resolve_across_databases(tmp_path: Path) -> None:
    reqs = requirements(graphs_of(sqlite_aba(tmp_path)))
    assert sorted(str(r) for r in reqs) == [
        "analytics@a1 requires core@r1",
        "core@r2 requires analytics@a1",
    ]


def test_unknown_database_or_revision_is_a_registry_error_naming_the_file(
    tmp_path: Path,
) -> None:
    project = sqlite_aba(tmp_path)
    a1 = project.root / "migrations" / "analytics" / "a1.py"
    a1.write_text(a1.read_text().replace("core@r1", "core@nope"))
    r = project.orch("status")
    assert r.exit_code == 2, r.stderr
    assert "a1.py" in r.stderr and "'nope' is not a revision of core" in r.stderr
    a1.write_text(a1.read_text().replace("core@nope", "billing@r1"))
    r = project.orch("plan", "--all")
    assert r.exit_code == 2
    assert "a1.py" in r.stderr and "no database 'billing'" in r.stderr


def test_a_requirement_cycle_is_a_registry_error_naming_the_cycle(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    r1 = project.root / "migrations" / "core" / "r1.py"
    r1.write_text(
        r1.read_text().replace(
            "depends_on = None\n", "depends_on = None\norch_requires = ('analytics@a1',)\n"
        )
    )
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 2, r.stderr
    assert "requirement cycle" in r.stderr
    assert "core@r1" in r.stderr and "analytics@a1" in r.stderr and "r1.py" in r.stderr
    assert not (project.root / "var").exists() or not list((project.root / "var").iterdir())


# ---------------------------------------------------------------- releases.yaml


def test_releases_file_round_trip_and_a_tag_is_written_once(tmp_path: Path) -> None:
    from orch.errors import RegistryError, UsageError

    path = tmp_path / "migrations" / "releases.yaml"
    assert len(load_releases(path)) == 0
    add_release(path, Release("v1", "2026-01-01T00:00:00Z", "first", {"core": ("r1",)}))
    add_release(path, Release("v2", "2026-01-02T00:00:00Z", "", {"core": ("r2",), "x": ()}))
    got = load_releases(path)
    assert [r.tag for r in got] == ["v1", "v2"]
    assert got.get("v2").heads == {"core": ("r2",), "x": ()}
    doc = yaml.safe_load(path.read_text())
    assert doc["version"] == 1 and doc["releases"][0]["heads"] == {"core": ["r1"]}
    with pytest.raises(UsageError, match="already exists"):
        add_release(path, Release("v1", "later", "", {"core": ("r9",)}))
    assert load_releases(path).get("v1").heads == {"core": ("r1",)}
    with pytest.raises(UsageError, match="bad release tag"):
        add_release(path, Release("head", "t", "", {}))
    with pytest.raises(UsageError, match="unknown release 'v3'"):
        got.get("v3")
    assert got.matching({"core": ["r2"], "x": []}) == "v2"
    assert got.matching({"core": ["r1"]}) == "v1"
    assert got.matching({"core": ["r1"], "x": ["q"]}) is None
    path.write_text("version: 1\nreleases:\n  - tag: v1\n    heads: [r1]\n")
    with pytest.raises(RegistryError, match=r"releases\[0\]\.heads"):
        load_releases(path)


# ---------------------------------------------------------------- interleaved runs


def trace(project: Project) -> list[str]:
    """What the revisions ran, in the order they ran (each appends a line)."""
    path = project.root / "trace.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def log_of(project: Project, db: str) -> list[tuple[str, str, str]]:
    from sqlalchemy import text

    with project.connect(db) as conn:
        rows = conn.execute(  # the steps' rows (not the table's version row, db '')
            text("SELECT direction, revision, outcome FROM orch_log WHERE db != '' ORDER BY id")
        )
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_aba_upgrade_down_and_cascade(aba: Project) -> None:
    """The issue's A-B-A case on every backend: plan, run, refusal, cascade."""
    r = aba.orch("plan", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    steps = [(s["name"], s["revisions"], s["level"]) for s in r.json()["steps"]]
    assert steps == [("core", ["r1"], 0), ("analytics", ["a1"], 1), ("core", ["r2"], 2)]
    text = aba.orch("plan", "--all").stdout.splitlines()
    assert [line.split()[1] for line in text[1:]] == ["core", "analytics", "core"]

    r = aba.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    assert trace(aba) == ["up r1", "up a1", "up r2"]
    by_name = {d["name"]: d for d in r.json()["databases"]}
    assert by_name["core"]["from"] == [] and by_name["core"]["to"] == ["r2"]
    assert by_name["core"]["applied"] == ["r1", "r2"] and by_name["core"]["outcome"] == "done"
    assert aba.versions("core") == ["r2"] and aba.versions("analytics") == ["a1"]
    assert log_of(aba, "core") == [("upgrade", "r1", "ok"), ("upgrade", "r2", "ok")]
    assert log_of(aba, "analytics") == [("upgrade", "a1", "ok")]

    r = aba.orch("downgrade", "core@base")
    assert r.exit_code == 2
    assert "analytics@a1" in r.stderr and "--cascade" in r.stderr
    assert aba.versions("core") == ["r2"] and trace(aba) == []

    r = aba.orch("downgrade", "core@base", "--cascade")
    assert r.exit_code == 0, r.stderr
    assert trace(aba) == ["down r2", "down a1", "down r1"]
    assert aba.versions("core") == [] and aba.versions("analytics") == []
    assert log_of(aba, "core")[-2:] == [("downgrade", "r2", "ok"), ("downgrade", "r1", "ok")]


def test_interleaved_sql_has_a_section_per_step(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    r = project.orch("upgrade", "--all", "--sql")
    assert r.exit_code == 0, r.stderr
    assert "execution order: core, analytics, core" in r.stdout
    assert r.stdout.index("t_r1") < r.stdout.index("t_a1") < r.stdout.index("t_r2")
    out = tmp_path / "sql"
    r = project.orch("upgrade", "--all", "--sql", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "01_core.sql",
        "02_analytics.sql",
        "03_core.sql",
    ]
    assert not (project.root / "var" / "core.db").exists() or project.versions("core") == []


def test_upgrade_one_database_refuses_an_unmet_requirement(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    r = project.orch("upgrade", "analytics")
    assert r.exit_code == 2
    assert "analytics@a1 requires core@r1" in r.stderr and "--with-deps" in r.stderr
    assert trace(project) == []
    r = project.orch("upgrade", "analytics", "--with-deps")
    assert r.exit_code == 0, r.stderr
    assert trace(project) == ["up r1", "up a1"]  # core just far enough: r2 is not asked for
    assert project.versions("core") == ["r1"] and project.versions("analytics") == ["a1"]
    # core to head now needs nothing more than what is applied
    r = project.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr
    assert trace(project) == ["up r2"]


def test_independent_work_runs_in_parallel_steps(tmp_path: Path) -> None:
    """analytics needs core@r1 only: core's r2 does not wait for analytics, nor it for r2."""
    from orch import Project as Api

    project = sqlite_aba(tmp_path)
    r2 = project.root / "migrations" / "core" / "r2.py"
    r2.write_text(r2.read_text().replace("orch_requires = ('analytics@a1',)\n", ""))
    plan = Api.load(project.registry_path).plan(all=True)
    got = [(s.key, s.revisions, s.level, s.after) for s in plan.steps]
    assert sorted(got) == [
        ("analytics", ("a1",), 1, ("core",)),
        ("core", ("r1",), 0, ()),
        ("core#2", ("r2",), 1, ("core",)),
    ]
    result = Api.load(project.registry_path).run(plan, jobs=2)
    assert result.ok and result["core"].applied == ["r1", "r2"]


# ---------------------------------------------------------------- release tags


def test_release_then_new_revisions_then_back_to_it(aba: Project) -> None:
    """The issue's release check on every backend."""
    r = aba.orch("release", "v1", "-m", "first")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(aba.root / "migrations" / "releases.yaml")
    doc = yaml.safe_load((aba.root / "migrations" / "releases.yaml").read_text())
    assert doc["version"] == 1
    (v1,) = doc["releases"]
    assert v1["tag"] == "v1" and v1["message"] == "first" and v1["created"].endswith("Z")
    assert v1["heads"] == {"core": ["r2"], "analytics": ["a1"]}  # the files' heads
    assert aba.orch("release", "v1").exit_code == 2  # a tag is written once

    r = aba.orch("upgrade", "--to", "v1")
    assert r.exit_code == 0, r.stderr
    assert trace(aba) == ["up r1", "up a1", "up r2"]
    status = aba.orch("status", "--json").json()
    assert status["release"] == "v1"
    assert [d["release"] for d in status["databases"]] == ["v1", "v1"]

    mig = aba.root / "migrations"
    write_rev(mig / "core", "r3", "r2")
    write_rev(mig / "analytics", "a2", "a1", requires=["core@r3"])
    write_rev(mig / "core", "r4", "r3", requires=["analytics@a2"])
    r = aba.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    assert trace(aba) == ["up r3", "up a2", "up r4"]
    status = aba.orch("status", "--json").json()
    assert status["release"] is None and [d["release"] for d in status["databases"]] == [
        None,
        None,
    ]
    assert "release: between releases" in aba.orch("status").stdout

    r = aba.orch("downgrade", "--to", "v1")
    assert r.exit_code == 0, r.stderr
    assert trace(aba) == ["down r4", "down a2", "down r3"]
    assert aba.versions("core") == ["r2"] and aba.versions("analytics") == ["a1"]
    assert aba.orch("status", "--json").json()["release"] == "v1"
    text = aba.orch("status").stdout
    assert "release: v1" in text
    r = aba.orch("downgrade", "--to", "v1")  # already there: nothing to do
    assert r.exit_code == 0, r.stderr and trace(aba) == []


def test_databases_added_after_the_tag(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    assert project.orch("release", "v1").exit_code == 0
    assert project.orch("upgrade", "--to", "v1").exit_code == 0
    data = project.registry()
    data["databases"]["billing"] = {}
    data["environments"]["dev"]["urls"]["billing"] = "sqlite:///var/billing.db"
    project.write_registry(data)
    write_rev(project.root / "migrations" / "billing", "b1", None, requires=["core@r1"])
    write_rev(project.root / "migrations" / "core", "r3", "r2")
    assert project.orch("upgrade", "--all").exit_code == 0
    trace(project)
    assert project.orch("status", "--json").json()["release"] is None

    r = project.orch("downgrade", "--to", "v1", "--keep-new")
    assert r.exit_code == 0, r.stderr
    assert trace(project) == ["down r3"]
    assert project.versions("billing") == ["b1"]
    r = project.orch("status", "--json").json()
    assert r["release"] is None  # billing is not at base, where v1 has it
    assert {d["name"]: d["release"] for d in r["databases"]} == {
        "core": "v1",
        "analytics": "v1",
        "billing": None,
    }

    r = project.orch("downgrade", "--to", "v1")
    assert r.exit_code == 0, r.stderr
    assert trace(project) == ["down b1"]
    assert project.orch("status", "--json").json()["release"] == "v1"
    # v1 is also where every database is in a second environment, shown per environment
    out = project.orch("status", "--all-envs").stdout
    assert "(release)" in out and "v1" in out


def test_release_misuse_is_refused(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    assert project.orch("release", "head").exit_code == 2
    assert project.orch("upgrade", "--to", "nope").exit_code == 2
    assert "unknown release 'nope'" in project.orch("upgrade", "--to", "nope").stderr
    assert project.orch("release", "v1").exit_code == 0
    assert project.orch("upgrade", "core", "--to", "v1").exit_code == 2
    assert project.orch("upgrade", "--to", "v1", "--all").exit_code == 2
    assert project.orch("downgrade", "core@base", "--keep-new").exit_code == 2
    r = project.orch("downgrade", "--to", "v1")  # below v1: that is an upgrade
    assert r.exit_code == 2 and "upgrade --to v1" in r.stderr
    assert trace(project) == []


def test_protected_environment_shows_the_whole_release_plan(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    data = project.registry()
    data["environments"]["dev"]["protected"] = True
    project.write_registry(data)
    assert project.orch("release", "v1").exit_code == 0
    r = project.orch("upgrade", "--to", "v1")  # no terminal, no --yes: shown, refused
    assert r.exit_code == 2
    lines = [line.split() for line in r.stderr.splitlines()]
    order = [w[1] for w in lines if len(w) > 3 and w[2] == "upgrade"]
    assert order == ["core", "analytics", "core"]
    assert "release: every database to v1" in r.stderr
    assert trace(project) == []
    assert project.orch("upgrade", "--to", "v1", "--yes").exit_code == 0
    assert trace(project) == ["up r1", "up a1", "up r2"]


# ---------------------------------------------------------------- graph --revisions


def test_graph_revisions_draws_requirements_as_edges(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    r = project.orch("graph", "--revisions")
    assert r.exit_code == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert rows == [
        ["core", "r1", "base", "-"],
        ["core", "r2", "r1", "analytics@a1"],
        ["analytics", "a1", "base", "core@r1"],
    ]
    mermaid = project.orch("graph", "--revisions", "--format", "mermaid").stdout
    assert "core__r1 --> core__r2" in mermaid
    assert "core__r1 -.->|requires| analytics__a1" in mermaid
    assert "analytics__a1 -.->|requires| core__r2" in mermaid
    dot = project.orch("graph", "--revisions", "--format", "dot").stdout
    assert '"core@r1" -> "analytics@a1" [style=dashed, label="requires"];' in dot
    assert '"core@r1" -> "core@r2";' in dot
    doc = project.orch("graph", "--revisions", "--json").json()
    assert {"from": "analytics@a1", "to": "core@r2", "kind": "requires"} in doc["edges"]
    # the database-level graph is unchanged
    assert "core --> analytics" in project.orch("graph", "--format", "mermaid").stdout


def test_rollback_of_an_interleaved_run_is_interleaved(tmp_path: Path) -> None:
    """--on-failure rollback undoes r2 before the a1 it requires, then r1."""
    project = sqlite_aba(tmp_path)
    a2 = write_rev(project.root / "migrations" / "analytics", "a2", "a1")
    a2.write_text(
        a2.read_text().replace(
            "op.execute('CREATE TABLE t_a2 (id INTEGER PRIMARY KEY)')",
            "op.execute('SELECT * FROM no_such_table')",
        )
    )
    r = project.orch("upgrade", "--all", "--on-failure", "rollback", "--json")
    assert r.exit_code == 1, r.stderr
    ran = trace(project)
    assert ran[:2] == ["up r1", "up a1"] and "up r2" in ran
    assert ran[-3:] == ["down r2", "down a1", "down r1"]
    assert project.versions("core") == [] and project.versions("analytics") == []
    by_name = {d["name"]: d for d in r.json()["databases"]}
    assert by_name["core"]["rollback"]["outcome"] == "done"
    assert by_name["analytics"]["rollback"]["outcome"] == "done"


def test_requirements_are_checked_again_under_the_lock(tmp_path: Path) -> None:
    """A database moved between plan and run: the requiring step refuses, nothing changes."""
    from orch import Project as Api

    project = sqlite_aba(tmp_path)
    assert project.orch("upgrade", "core@r1").exit_code == 0
    trace(project)
    api = Api.load(project.registry_path)
    plan = api.plan(all=True)
    steps = [(s.db, s.revisions, s.after) for s in plan.steps]
    assert steps == [("analytics", ("a1",), ()), ("core", ("r2",), ("analytics",))]
    assert project.orch("stamp", "core@base").exit_code == 0  # someone moved core meanwhile
    result = api.run(plan, jobs=1)
    assert result.exit_code == 2
    assert result["analytics"].outcome == "refused"
    assert "analytics@a1 requires core@r1" in (result["analytics"].error or "")
    assert trace(project) == []
    assert project.versions("analytics") == []


def test_sql_to_a_release_shows_every_step_in_order(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    assert project.orch("release", "v1").exit_code == 0
    r = project.orch("upgrade", "--to", "v1", "--sql")
    assert r.exit_code == 0, r.stderr
    assert "execution order: core, analytics, core" in r.stdout
    assert r.stdout.index("t_r1") < r.stdout.index("t_a1") < r.stdout.index("t_r2")
    trace(project)  # --sql renders offline: the revisions' Python runs, no SQL does
    assert project.versions("core") == []
    assert project.orch("upgrade", "--to", "v1").exit_code == 0
    trace(project)
    write_rev(project.root / "migrations" / "core", "r3", "r2")
    assert project.orch("upgrade", "--all").exit_code == 0
    trace(project)
    r = project.orch("downgrade", "--to", "v1", "--sql", "--json")
    assert r.exit_code == 0, r.stderr
    assert [(d["name"], d["revisions"]) for d in r.json()["databases"]] == [
        ("core", ["r3"]),
        ("analytics", []),
    ] or [d["name"] for d in r.json()["databases"]] == ["core"]
    assert project.versions("core") == ["r3"]


# ---------------------------------------------------------------- the planner, from literals


def _literal() -> tuple[Any, dict[str, Any]]:
    """core c1 <- c2 <- c3; analytics a1 <- a2 <- a3; a1 requires core@c1, c2 requires
    analytics@a1, a2 requires core@c3 (registry: analytics depends_on core)."""
    from orch.config.registry import DatabaseSpec, Registry, Settings
    from orch.config.revisions import Graph

    root = Path("/nowhere")
    reg = Registry(
        path=root / "databases.yaml",
        databases={
            "core": DatabaseSpec("core", root / "core", "core", ()),
            "analytics": DatabaseSpec("analytics", root / "analytics", "analytics", ("core",)),
        },
        environments={},
        default_env=None,
        settings=Settings(),
        prepend_sys_path=(),
        script_location=root,
    )
    core = Graph(
        [Rev("c1"), Rev("c2", ("c1",), requires=("analytics@a1",)), Rev("c3", ("c2",))],
        name="core",
    )
    analytics = Graph(
        [
            Rev("a1", requires=("core@c1",)),
            Rev("a2", ("a1",), requires=("core@c3",)),
            Rev("a3", ("a2",)),
        ],
        name="analytics",
    )
    return reg, {"core": core, "analytics": analytics}


def test_planner_interleaves_from_literals() -> None:
    from orch.planning.plan import Selector, plan_upgrade

    reg, graphs = _literal()
    base: dict[str, tuple[str, ...] | None] = {"core": (), "analytics": ()}
    plan = plan_upgrade(reg, [], all_=True, graphs=graphs, currents=base)
    got = [(s.key, s.revisions, s.after, s.current) for s in plan.steps]
    assert got == [
        ("core", ("c1",), (), ()),
        ("analytics", ("a1",), ("core",), ()),
        ("core#2", ("c2", "c3"), ("analytics", "core"), ("c1",)),
        ("analytics#2", ("a2", "a3"), ("analytics", "core#2"), ("a1",)),
    ]
    assert [s.target for s in plan.steps] == ["c1", "a1", "head", "head"]
    assert plan.names == ["core", "analytics"] and plan.interleaved
    # without requirements between them the plan is the database-level one, unchanged
    from orch.config.revisions import Graph

    plain = {
        n: Graph([dataclasses.replace(r, requires=()) for r in g.revs.values()], name=n)
        for n, g in graphs.items()
    }
    flat = plan_upgrade(reg, [], all_=True, graphs=plain, currents=base)
    assert [(s.key, s.after) for s in flat.steps] == [("core", None), ("analytics", None)]
    # one database alone: a requirement neither applied nor run is refused, naming it
    with pytest.raises(Exception, match=r"analytics@a1 requires core@c1") as info:
        plan_upgrade(reg, [Selector("analytics")], all_=False, graphs=graphs, currents=base)
    assert getattr(info.value, "exit_code", None) == 2
    # --with-deps: core just far enough (c1), then again for what c1... needs nothing more
    plan = plan_upgrade(
        reg,
        [Selector("analytics", "a1")],
        all_=False,
        graphs=graphs,
        currents=base,
        with_deps=True,
    )
    assert [(s.db, s.revisions) for s in plan.steps] == [("core", ("c1",)), ("analytics", ("a1",))]


def test_cascade_goes_just_far_enough_from_literals() -> None:
    from orch.errors import RefusedError
    from orch.planning.plan import Selector, plan_downgrade

    reg, graphs = _literal()
    top: dict[str, tuple[str, ...] | None] = {"core": ("c3",), "analytics": ("a3",)}
    # core down to c2 removes c3, which a2 requires: a2 and a3 go first, a1 stays
    with pytest.raises(RefusedError, match=r"analytics@a2 \(applied\) requires core@c3"):
        plan_downgrade(reg, [Selector("core", "c2")], graphs=graphs, currents=top)
    plan = plan_downgrade(reg, [Selector("core", "c2")], graphs=graphs, currents=top, cascade=True)
    assert [(s.db, s.revisions) for s in plan.steps] == [
        ("analytics", ("a3", "a2")),
        ("core", ("c3",)),
    ]
    # core to base: everything, in an order every requirement allows
    plan = plan_downgrade(
        reg, [Selector("core", "base")], graphs=graphs, currents=top, cascade=True
    )
    order = [rev for s in plan.steps for rev in s.revisions]
    assert order == ["a3", "a2", "c3", "c2", "a1", "c1"]


def test_progress_lines_come_in_run_order(tmp_path: Path) -> None:
    project = sqlite_aba(tmp_path)
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    heads = [line.split(" (")[0] for line in r.stderr.splitlines() if ": upgrade " in line]
    assert heads == [
        "core: upgrade base -> r1",
        "analytics: upgrade base -> head",
        "core: upgrade r1 -> head",
    ]
