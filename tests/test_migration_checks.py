"""``orch test``: the migrations themselves checked on throwaway databases, and the pytest plugin.

Every test runs the checks for real (SQLite, PostgreSQL, MariaDB) on a copy
of the reference project, sometimes with a broken revision added, and then
proves that the environment's own databases were not touched and that the
throwaway databases are gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import MYSQL_URL, PG_URL, Project, require_server
from orch.config.registry import load_registry
from orch.config.revisions import load_graph
from orch.run.testing import CHECKS, PREFIX, DatabaseChecks, check_migrations, failures


def leftovers(kind: str) -> set[str]:
    """Throwaway databases (orch_test_*) on the test server of *kind*."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if kind == "sqlite":
        return set()
    url = PG_URL if kind == "postgresql" else MYSQL_URL
    sql = (
        "SELECT datname FROM pg_database"
        if kind == "postgresql"
        else "SELECT schema_name FROM information_schema.schemata"
    )
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            return {n for n in c.execute(text(sql)).scalars() if n.startswith(PREFIX)}
    finally:
        eng.dispose()


@pytest.fixture
def scratch_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the throwaway SQLite files go (tempfile's directory), to prove they are gone."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def run_checks(project: Project, *names: str) -> list[DatabaseChecks]:
    return check_migrations(load_registry(project.registry_path), None, list(names) or None)


def states(result: DatabaseChecks) -> dict[str, str]:
    return {c.check: c.state for c in result.checks}


def head(project: Project, db: str) -> str:
    (only,) = load_graph(project.root / "migrations" / db, db).heads
    return only


def add_revision(project: Project, db: str, rev: str, down: str | None, body: str) -> None:
    """A revision file for *db* with *body* (``upgrade``/``downgrade`` definitions)."""
    path = project.root / "migrations" / db / f"{rev}_test.py"
    path.write_text(
        f'"""a revision added by the test\n\nRevision ID: {rev}\n"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n\n"
        f"revision = {rev!r}\ndown_revision = {down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n" + textwrap.dedent(body)
    )


LEAVES_A_TABLE = """
def upgrade():
    op.create_table("leftover", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    pass
"""


def test_reference_project_passes_every_check(
    backend_project: Project, backend: str, scratch_dir: Path
) -> None:
    before = leftovers(backend)
    r = backend_project.orch("test", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = r.json()
    assert doc["schema"] == 1 and doc["exit_code"] == 0 and "error" not in doc
    assert doc["environment"] == "dev"
    assert [d["name"] for d in doc["databases"]] == ["core", "analytics"]  # depends_on order
    for d in doc["databases"]:
        assert d["backend"] == backend and d["state"] == "passed"
        assert [c["check"] for c in d["checks"]] == list(CHECKS)
        assert {c["state"] for c in d["checks"]} == {"passed"}, d
    assert "4 revision(s)" in doc["databases"][0]["checks"][2]["detail"]
    assert r.stderr == ""
    # never the environment's own databases: they stay empty
    assert backend_project.tables("core") == set()
    assert backend_project.tables("analytics") == set()
    assert leftovers(backend) == before
    assert list(scratch_dir.iterdir()) == []


def test_the_table_and_the_exit_codes(project: Project, scratch_dir: Path) -> None:
    r = project.orch("test")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "environment: dev"
    assert lines[1].split() == ["DATABASE", *(c.upper() for c in CHECKS)]
    assert lines[2].split() == ["core", *["passed"] * 5]
    assert lines[3].split() == ["analytics", *["passed"] * 5]
    assert not (project.root / "var").exists()  # dev's SQLite files were never created

    r = project.orch("test", "analytics", "-v")
    assert r.exit_code == 0
    assert [ln.split()[0] for ln in r.stdout.splitlines()[2:]] == ["analytics"]
    assert "analytics: throwaway database sqlite:///" in r.stderr  # progress: stderr only

    r = project.orch("test", "nope")
    assert r.exit_code == 2 and r.stdout == ""
    assert "unknown database 'nope'" in r.stderr
    r = project.orch("test", "nope", "--json")
    assert r.exit_code == 2 and r.json()["exit_code"] == 2


def test_a_login_that_may_not_create_databases(
    project: Project, make_db: Callable[..., str]
) -> None:
    """The environment's login cannot CREATE DATABASE: exit 1, saying so, never the password."""
    password = "pw-Xq7-secret"
    url = make_db("postgresql", password=password)
    project.set_urls("dev", {"core": url, "analytics": url.replace("/orch_t_", "/other_")})
    r = project.orch("test", "core")
    assert r.exit_code == 1
    assert "cannot create the throwaway database orch_test_core_" in r.stderr
    assert "permission denied" in r.stderr
    assert password not in r.stdout + r.stderr


def test_a_downgrade_that_leaves_a_table_fails_naming_the_revision(
    backend_project: Project, backend: str, scratch_dir: Path
) -> None:
    before = leftovers(backend)
    add_revision(
        backend_project, "core", "aaaa00000001", head(backend_project, "core"), LEAVES_A_TABLE
    )
    (core,) = run_checks(backend_project, "core")
    assert core.failed
    trace = core.check("no_trace")
    assert trace.state == "failed"
    assert trace.revision == "aaaa00000001"
    assert [d["text"] for d in trace.differences] == ["table leftover: left behind"]
    assert trace.differences[0]["object"] == "table"
    stairway = core.check("stairway")
    # up, down (leaves the table), up again: the table is already there
    assert (stairway.state, stairway.revision) == ("failed", "aaaa00000001")
    assert stairway.detail.startswith("upgrade after its downgrade:")
    assert core.check("upgrade").state == "passed"
    assert core.check("single_head").state == "passed"
    # the models do not have the table either
    assert core.check("models_match").state == "failed"
    assert any("leftover" in line for line in failures([core]))
    assert leftovers(backend) == before  # dropped after a failing check too
    assert list(scratch_dir.iterdir()) == []
    assert backend_project.tables("core") == set()

    r = backend_project.orch("test")
    assert r.exit_code == 1
    assert "  core no_trace: failed: aaaa00000001: its downgrade leaves 1 difference(s)" in r.stdout
    assert "    table leftover: left behind" in r.stdout
    r = backend_project.orch("test", "--json")
    assert r.exit_code == 1
    assert r.json()["error"] == (
        "failed: core stairway at aaaa00000001, core no_trace at aaaa00000001, core models_match"
    )
    assert leftovers(backend) == before


def test_a_trace_in_the_middle_of_a_history(project: Project, scratch_dir: Path) -> None:
    """A downgrade that forgets an index: the stairway still passes; no_trace names it."""
    add_revision(
        project,
        "core",
        "bbbb00000001",
        head(project, "core"),
        """
        def upgrade():
            op.create_index("ix_users_display_name", "users", ["display_name"], if_not_exists=True)


        def downgrade():
            pass
        """,
    )
    add_revision(project, "core", "bbbb00000002", "bbbb00000001", NOTHING)
    (core,) = run_checks(project, "core")
    assert core.check("stairway").state == "passed", failures([core])
    trace = core.check("no_trace")
    assert (trace.state, trace.revision) == ("failed", "bbbb00000001")
    assert [d["text"] for d in trace.differences] == [
        "index on users ix_users_display_name (display_name): left behind"
    ]
    assert trace.differences[0]["object"] == "index"


NOTHING = """
def upgrade():
    pass


def downgrade():
    pass
"""


def test_two_heads_fail_single_head(project: Project, scratch_dir: Path) -> None:
    core_head = head(project, "core")
    parent = load_graph(project.root / "migrations" / "core", "core").revs[core_head].down[0]
    add_revision(
        project,
        "core",
        "cccc00000001",
        parent,
        """
        def upgrade():
            op.create_table("side", sa.Column("id", sa.Integer, primary_key=True))


        def downgrade():
            op.drop_table("side")
        """,
    )
    (core,) = run_checks(project, "core")
    single = core.check("single_head")
    assert single.state == "failed"
    assert "2 heads" in single.detail and "cccc00000001" in single.detail
    assert core.check("upgrade").state == "passed"  # both heads upgrade
    # each branch's revision goes up, down and up on its own
    assert core.check("stairway").state == "passed", failures([core])
    assert core.check("no_trace").state == "passed", failures([core])


def test_models_that_differ_from_the_migrations_fail_models_match(
    project: Project, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
        monkeypatch.delitem(sys.modules, name)  # this copy's models, not an earlier test's
    models = project.root / "src" / "shop" / "models.py"
    models.write_text(
        models.read_text()
        + "\n\nfrom sqlalchemy import Column, Table\n"
        + 'Table("not_migrated", core_metadata, Column("id", Integer, primary_key=True))\n'
    )
    results = run_checks(project)
    core, analytics = results
    match = core.check("models_match")
    assert match.state == "failed"
    assert [d["op"] for d in match.differences] == ["add_table"]
    assert "not_migrated" in match.differences[0]["text"]
    assert {c.check for c in core.checks if c.state == "failed"} == {"models_match"}
    assert not analytics.failed


def test_no_metadata_is_not_applicable(project: Project, scratch_dir: Path) -> None:
    data = project.registry()
    del data["databases"]["analytics"]["metadata"]
    project.write_registry(data)
    (analytics,) = run_checks(project, "analytics")
    assert analytics.check("models_match").state == "not_applicable"
    assert "metadata" in analytics.check("models_match").detail
    assert not analytics.failed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_drops_the_throwaway_databases(project: Project, signum: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM) in the middle of a revision: the throwaway database is dropped."""
    require_server("postgresql")
    from sqlalchemy.engine import make_url

    before = leftovers("postgresql")
    server = make_url(PG_URL)
    urls = {
        db: server.set(database=f"never_created_{db}").render_as_string(hide_password=False)
        for db in ("core", "analytics")
    }
    project.set_urls("dev", urls)
    add_revision(
        project,
        "core",
        "dddd00000001",
        head(project, "core"),
        """
        def upgrade():
            import sys, time
            print("SLEEPING", file=sys.stderr, flush=True)
            time.sleep(60)


        def downgrade():
            pass
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "test", "core", "-v"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        seen.append(line)
        if "SLEEPING" in line or time.monotonic() > deadline:
            break
    assert any(PREFIX in line for line in seen), seen
    proc.send_signal(signum)
    out, rest = proc.communicate(timeout=60)
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), rest
    assert f"orch: stopped by {signum.name}; the throwaway databases are dropped" in rest
    assert out == ""
    assert leftovers("postgresql") == before


# ---------------------------------------------------------------- the pytest plugin


def _plugin_entry_point() -> bool:
    from importlib.metadata import entry_points

    return any(e.value == "orch.pytest_plugin" for e in entry_points(group="pytest11"))


def run_pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in *root* as a user runs it: orch's plugin from its entry point (else -p)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTEST_"))}
    plugin = [] if _plugin_entry_point() else ["-p", "orch.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


USER_TESTS = """
from sqlalchemy import create_engine, inspect, text


def test_migrations(orch_migration_checks):
    results = orch_migration_checks()
    assert [r.name for r in results] == ["core", "analytics"]


def test_with_databases(orch_databases):
    assert sorted(orch_databases) == ["analytics", "core"]
    eng = create_engine(orch_databases["core"])
    with eng.connect() as c:
        assert "users" in inspect(c).get_table_names()
        c.execute(text("INSERT INTO users (id, email, display_name, created_at, is_active) "
                       "VALUES (1, 'a@example.org', 'a', CURRENT_TIMESTAMP, true)"))
        c.commit()
    eng.dispose()
    with open("urls.txt", "a") as f:
        f.write(orch_databases["core"] + "\\n")


def test_fresh_databases_each_time(orch_databases):
    eng = create_engine(orch_databases["core"])
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM users")).scalar() == 0
    eng.dispose()
"""


@pytest.fixture
def user_project(backend_project: Project, backend: str) -> Iterator[tuple[Project, str]]:
    (backend_project.root / "tests").mkdir()
    (backend_project.root / "tests" / "test_db.py").write_text(USER_TESTS)
    yield backend_project, backend


def test_plugin_fixtures_in_a_users_suite(user_project: tuple[Project, str]) -> None:
    project, backend = user_project
    before = leftovers(backend)
    r = run_pytest(project.root, "tests")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed" in r.stdout
    (url,) = (project.root / "urls.txt").read_text().split()
    assert PREFIX in url
    if backend == "sqlite":
        assert not Path(url.removeprefix("sqlite:///")).exists()
    assert leftovers(backend) == before
    assert project.tables("core") == set()  # the environment's database: untouched


def test_plugin_check_fails_with_the_details(project: Project) -> None:
    add_revision(project, "core", "eeee00000001", head(project, "core"), LEAVES_A_TABLE)
    (project.root / "test_m.py").write_text(
        "def test_migrations(orch_migration_checks):\n    orch_migration_checks('core')\n"
    )
    r = run_pytest(project.root, "test_m.py")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "orch migration checks failed" in r.stdout
    assert "core no_trace: eeee00000001" in r.stdout
    assert "table leftover: left behind" in r.stdout


def test_plugin_stays_out_of_other_suites(tmp_path: Path) -> None:
    """A suite that does not use orch: no registry looked for, nothing heavy imported."""
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\n"
        "def test_plain():\n"
        "    assert 'sqlalchemy' not in sys.modules\n"
        "    assert 'orch.config.registry' not in sys.modules\n"
    )
    r = run_pytest(tmp_path, "test_plain.py")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_pytest(tmp_path, "--help")
    assert "--orch-config" in r.stdout


def test_the_python_api(project: Project, scratch_dir: Path) -> None:
    import orch

    notes: list[str] = []
    report = orch.Project.load(project.registry_path).test_migrations(
        ["analytics"], on_note=notes.append
    )
    assert isinstance(report, orch.MigrationChecksReport)
    assert report.exit_code == 0 and report.error is None and report.failures == []
    assert report["analytics"].check("models_match").state == orch.Verdict.PASSED
    assert [r.name for r in report] == ["analytics"]
    assert any("throwaway database" in n for n in notes)
