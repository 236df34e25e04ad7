"""One revision id in two databases' histories: orch runs both right, and says so.

Projects adopted from a loop of ``alembic`` often carry hand-written ids, and
two histories can share one (``a1b2c3d4e5f6``).  orch keeps them apart (each
database's Config knows only its directory), but plain ``alembic`` over
alembic.ini's ``version_locations`` resolves the wrong file.  So: a warning
on stderr from commands that read the graphs, a problem in ``orch check``
(exit 1) naming both files, and ``--rev-id`` refuses an id another database
has.  Databases sharing one directory (shards) share its ids: no warning.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Project
from orch.config.registry import parse_registry
from orch.planning.live import graphs_for, shared_ids
from test_commands import ANALYTICS, CORE

SHARED = "a1b2c3d4e5f6"
CORE_FILE = f"migrations/core/{SHARED}_core_extra.py"
ANALYTICS_FILE = f"migrations/analytics/{SHARED}_analytics_extra.py"


def _revision(path: Path, down: str | None, table: str) -> None:
    path.write_text(
        f'"""create {table}"""\n'
        "from alembic import op\n"
        "import sqlalchemy as sa\n\n"
        f"revision = {SHARED!r}\n"
        f"down_revision = {down!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        f"    op.create_table({table!r}, sa.Column('id', sa.Integer, primary_key=True))\n\n\n"
        "def downgrade() -> None:\n"
        f"    op.drop_table({table!r})\n"
    )


def share_an_id(p: Project) -> None:
    """core and analytics each get a new head with the same hand-written id."""
    _revision(p.root / CORE_FILE, CORE[-1], "core_extra")
    _revision(p.root / ANALYTICS_FILE, ANALYTICS[-1], "analytics_extra")


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: revision id")]


def test_orch_runs_each_history_and_warns_once(backend_project: Project) -> None:
    p = backend_project
    share_an_id(p)
    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert {d["name"]: d["outcome"] for d in r.json()["databases"]} == {
        "core": "done",
        "analytics": "done",
    }
    # each database ran its own file: orch is unaffected by the shared id
    assert p.versions("core") == [SHARED] and p.versions("analytics") == [SHARED]
    assert "core_extra" in p.tables("core") and "analytics_extra" not in p.tables("core")
    assert "analytics_extra" in p.tables("analytics") and "core_extra" not in p.tables("analytics")
    found = warnings(r.stderr)
    assert len(found) == 1, r.stderr
    assert CORE_FILE in found[0] and ANALYTICS_FILE in found[0]
    assert "(core)" in found[0] and "(analytics)" in found[0]
    assert "give one of the two a new id" in found[0].lower()


def test_commands_that_read_the_graphs_warn_on_stderr(project: Project) -> None:
    p = project
    share_an_id(p)
    for args in (
        ["status"],
        ["status", "--json"],
        ["status", "--all-envs", "--json"],
        ["plan", "--json"],
        ["upgrade", "--all", "--sql"],
        ["upgrade", "analytics", "--with-deps", "--sql", "--json"],
        ["downgrade", "core@base", "--json"],
    ):
        r = p.orch(*args)
        assert r.exit_code in (0, 1), (args, r.stdout, r.stderr)
        found = warnings(r.stderr)
        assert len(found) == 1, (args, r.stderr)
        assert CORE_FILE in found[0] and ANALYTICS_FILE in found[0]
        assert "warning" not in r.stdout  # stdout stays the result
        if "--json" in args:
            r.json()  # one JSON document


def test_no_warning_without_a_shared_id(project: Project) -> None:
    r = project.orch("status")
    assert r.exit_code == 0
    assert "warning" not in r.stderr


def test_check_reports_the_problem_and_exits_1(project: Project) -> None:
    p = project
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("check", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr  # clean before
    assert r.json()["problems"] == []

    share_an_id(p)  # not applied: the schema still matches the models, no drift
    r = p.orch("check")
    assert r.exit_code == 1, r.stdout + r.stderr
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1
    assert CORE_FILE in problems[0] and ANALYTICS_FILE in problems[0]
    assert warnings(r.stderr) == []  # reported once, as the result, not again as a warning

    r = p.orch("check", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert doc["exit_code"] == 1
    assert doc["problems"] == [
        {
            "problem": "shared_revision_id",
            "revision": SHARED,
            "files": [CORE_FILE, ANALYTICS_FILE],
            "databases": [["core"], ["analytics"]],
            "message": problems[0].removeprefix("problem: "),
        }
    ]
    assert f"revision id {SHARED} shared by two databases" in doc["error"]
    # naming one of the two databases still reports it
    assert p.orch("check", "analytics", "--json").json()["problems"] == doc["problems"]


def test_shards_sharing_one_directory_share_its_ids(project: Project) -> None:
    """Several databases on one versions directory: the same files, not a duplicate."""
    p = project
    data = p.registry()
    data["databases"]["shard"] = {"versions": "migrations/core", "branch": "core"}
    data["environments"]["dev"]["urls"]["shard"] = "sqlite:///var/dev/shard.db"
    for env in ("staging", "prod"):
        del data["environments"][env]
    p.write_registry(data)
    r = p.orch("status", "--json")
    assert r.exit_code == 0, r.stderr
    assert "warning" not in r.stderr
    assert p.orch("check", "--json").json()["problems"] == []
    reg = parse_registry(p.registry_path)
    assert shared_ids(reg, graphs_for(reg)) == []


def test_three_directories(project: Project) -> None:
    """An id in three directories: each later one is reported against the first."""
    p = project
    share_an_id(p)
    third = p.root / "migrations" / "audit"
    third.mkdir()
    _revision(third / f"{SHARED}_audit.py", None, "audit_extra")
    data = p.registry()
    data["databases"]["audit"] = {}
    for env in data["environments"].values():
        env["urls"]["audit"] = None
    p.write_registry(data)
    reg = parse_registry(p.registry_path)
    found = shared_ids(reg, graphs_for(reg))
    assert [(s.revision, s.databases) for s in found] == [
        (SHARED, (("core",), ("analytics",))),
        (SHARED, (("core",), ("audit",))),
    ]


def test_rev_id_refuses_an_id_another_database_has(project: Project) -> None:
    p = project
    before = sorted((p.root / "migrations" / "core").iterdir())
    r = p.orch("revision", "core", "-m", "x", "--rev-id", ANALYTICS[0])
    assert r.exit_code == 2
    assert f"--rev-id {ANALYTICS[0]}: database analytics already has a revision" in r.stderr
    assert sorted((p.root / "migrations" / "core").iterdir()) == before
    # an id of its own history is refused as before; a new one is fine
    assert p.orch("revision", "core", "-m", "x", "--rev-id", CORE[0]).exit_code == 2
    r = p.orch("revision", "core", "-m", "x", "--rev-id", SHARED)
    assert r.exit_code == 0, r.stderr


def test_re_id_one_history_then_stamp(backend_project: Project) -> None:
    """The fix the guide gives: new id in one history's files, then stamp its databases.

    A database at the old id is at a revision no file declares any more
    (``unknown_revision``); ``orch stamp`` repairs exactly that (it replaces
    the version rows), and the warning is gone.
    """
    p = backend_project
    share_an_id(p)
    assert p.orch("upgrade", "--all").exit_code == 0
    assert p.versions("analytics") == [SHARED]

    new = "f00dfeed0001"
    old_file = p.root / ANALYTICS_FILE
    text = old_file.read_text().replace(f"revision = {SHARED!r}", f"revision = {new!r}")
    (p.root / "migrations" / "analytics" / f"{new}_analytics_extra.py").write_text(text)
    old_file.unlink()

    st = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    assert st["analytics"]["state"] == "unknown_revision"
    r = p.orch("stamp", f"analytics@{new}", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.json()["databases"][0]["outcome"] == "done"
    assert r.json()["databases"][0]["from"] == [SHARED]
    assert p.versions("analytics") == [new]
    assert p.versions("core") == [SHARED]  # the other history is untouched

    r = p.orch("status", "--json")
    assert {d["state"] for d in r.json()["databases"]} == {"up_to_date"}
    assert warnings(r.stderr) == []
    assert p.orch("check", "--json").json()["problems"] == []
    # and the history goes on from the new id
    r = p.orch("downgrade", "analytics@-1", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "analytics_extra" not in p.tables("analytics")
    assert p.versions("analytics") == [ANALYTICS[-1]]
