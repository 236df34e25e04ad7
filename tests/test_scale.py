"""Parallel databases, fleets and fast start: what a user relies on when orch runs at scale.

Timings are the benchmark's job (``bench/run.py``); these tests check the
behaviour that makes orch fast and safe to run wide: each database runs
exactly once, in dependency order, with its output kept together and a
deterministic summary; a fleet of 200 databases sharing one version
directory works within a small file-descriptor limit; ``--help`` imports
no database machinery.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import PG_URL, REPO, Result, require_server, run_orch

sys.path.insert(0, str(REPO / "bench"))
import projectgen  # noqa: E402


def orch(root: Path, *args: str) -> Result:
    return run_orch(list(args), cwd=root)


def log_rows(db_file: Path) -> list[tuple[str, str, str, str]]:
    """(db, revision, direction, outcome) of every step's orch_log row, oldest first."""
    con = sqlite3.connect(db_file)
    try:
        return list(
            con.execute(
                "SELECT db, revision, direction, outcome FROM orch_log WHERE db != '' ORDER BY id"
            )
        )
    finally:
        con.close()


def sqlite_project(tmp_path: Path, n: int, k: int, **kw: Any) -> projectgen.Project:
    root = tmp_path / "proj"
    urls = {f"d{i:03d}": f"sqlite:///{root}/var/d{i:03d}.db" for i in range(n)}
    return projectgen.make_project(root, urls, k, plain=False, **kw)


def db_file(p: projectgen.Project, name: str) -> Path:
    return Path(p.urls[name].split("///", 1)[1])


# ---------------------------------------------------------------- parallel upgrade


def test_parallel_upgrade_runs_each_database_exactly_once(tmp_path: Path) -> None:
    p = sqlite_project(tmp_path, 6, 3)
    r = orch(p.root, "upgrade", "--all", "--jobs", "4", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [d["name"] for d in doc["databases"]] == p.names  # plan order, not finish order
    for d in doc["databases"]:
        assert (d["outcome"], d["applied"]) == ("done", p.heads[d["name"]]), d
    for name in p.names:
        rows = log_rows(db_file(p, name))
        assert rows == [(name, rev, "upgrade", "ok") for rev in p.heads[name]]


def test_parallel_output_stays_together_and_summary_is_in_plan_order(tmp_path: Path) -> None:
    p = sqlite_project(tmp_path, 5, 4)
    r = orch(p.root, "upgrade", "--all", "--jobs", "3")
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    owner = {rev: name for name in p.names for rev in p.heads[name]}
    blocks: list[str] = []
    for ln in lines:
        if not ln.startswith(" "):
            blocks.append(ln.split(":", 1)[0])
            continue
        rev = ln.split()[0]
        assert owner[rev] == blocks[-1], f"{rev} printed inside {blocks[-1]}'s block:\n{r.stderr}"
    assert sorted(blocks) == p.names  # one block per database
    summary = [ln.split()[0] for ln in r.stdout.splitlines()[1:] if ln.strip()]
    assert summary == p.names


def test_parallel_upgrade_keeps_dependency_order(tmp_path: Path) -> None:
    """A dependent starts only after its dependency finished, even with free workers."""
    p = sqlite_project(tmp_path, 4, 3)
    reg = (p.root / "databases.yaml").read_text()
    reg = reg.replace("  d001: {}", "  d001:\n    depends_on: [d000]")
    reg = reg.replace("  d002: {}", "  d002:\n    depends_on: [d001]")
    (p.root / "databases.yaml").write_text(reg)
    r = orch(p.root, "upgrade", "--all", "--jobs", "4", "--json")
    assert r.exit_code == 0, r.stderr
    stamps: dict[str, tuple[str, str]] = {}
    for name in p.names:
        con = sqlite3.connect(db_file(p, name))
        stamps[name] = con.execute(
            "SELECT min(started_at), max(finished_at) FROM orch_log WHERE db != ''"
        ).fetchone()
        con.close()
    assert stamps["d000"][1] <= stamps["d001"][0]
    assert stamps["d001"][1] <= stamps["d002"][0]


def test_jobs_1_runs_inline_with_the_same_result(tmp_path: Path) -> None:
    p = sqlite_project(tmp_path, 3, 2)
    r = orch(p.root, "upgrade", "--all", "--jobs", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert [d["outcome"] for d in json.loads(r.stdout)["databases"]] == ["done"] * 3


# ---------------------------------------------------------------- a fleet


def _limited_nofile(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def orch_limited(root: Path, *args: str, nofile: int) -> subprocess.CompletedProcess[str]:
    """orch in a subprocess that may hold at most *nofile* open files."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "orch", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: _limited_nofile(nofile),
        timeout=300,
    )


def test_fleet_of_200_sqlite_databases_sharing_one_directory(tmp_path: Path) -> None:
    """200 tenants, one history: status and upgrade --all with far fewer file handles than
    databases (bounded pools, every connection closed)."""
    p = sqlite_project(tmp_path, 200, 2, shared=True)
    r = orch_limited(p.root, "upgrade", "--all", "--jobs", "8", "--json", nofile=96)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert len(doc["databases"]) == 200
    assert {d["outcome"] for d in doc["databases"]} == {"done"}
    r = orch_limited(p.root, "status", "--json", nofile=96)
    assert r.returncode == 0, r.stderr[-2000:]
    states = [d["state"] for d in json.loads(r.stdout)["databases"]]
    assert states == ["up_to_date"] * 200
    head = p.heads["d000"][-1]
    assert all(log_rows(db_file(p, n))[-1] == (n, head, "upgrade", "ok") for n in ("d000", "d199"))


# ---------------------------------------------------------------- status on one server


def test_status_reads_each_postgresql_database_of_one_server_on_its_own(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Databases of one server share the connection setup, never each other's rows.

    The first database does not exist (its connection fails before any
    setup), one was never migrated, one has another login, the rest are at
    different revisions.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    urls = {
        "d000": make_url(make_db("postgresql"))
        .set(database="orch_t_no_such_db")
        .render_as_string(hide_password=False),
        "d001": make_db("postgresql"),
        "d002": make_db("postgresql", password="s3cret-status"),
        **{f"d{i:03d}": make_db("postgresql") for i in range(3, 7)},
    }
    p = projectgen.make_project(tmp_path / "proj", urls, 5, plain=False)
    expected: dict[str, str | None] = {"d000": None, "d001": None}
    for i, name in enumerate(p.names[2:], start=2):
        rev = p.heads[name][i % 5]
        expected[name] = rev
        eng = create_engine(urls[name], poolclass=NullPool)
        with eng.begin() as c:
            c.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            c.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": rev})
        eng.dispose()
    r = orch(p.root, "status", "--json")
    assert "s3cret-status" not in r.stdout + r.stderr
    got = {d["name"]: d for d in json.loads(r.stdout)["databases"]}
    assert got["d000"]["state"] == "unreachable"
    assert "orch_t_no_such_db" in got["d000"]["error"]
    assert (got["d001"]["state"], got["d001"]["current"], got["d001"]["pending"]) == (
        "behind",
        [],
        5,
    )
    for name in p.names[2:]:
        assert got[name]["current"] == [expected[name]], name
        want = "up_to_date" if expected[name] == p.heads[name][-1] else "behind"
        assert got[name]["state"] == want


# ---------------------------------------------------------------- fast start

HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg2",
    "pymysql",
    "MySQLdb",
    "sqlite3",
    "mako",
    "pglast",  # orch lint's parsers: only orch lint imports them
    "sqlglot",
)

# ``python -m orch`` ends with os._exit after the atexit handlers: report from one
PROBE = """
import atexit, json, runpy, sys
watch = set(json.loads(sys.argv[2]))
sys.argv = ["orch", *json.loads(sys.argv[1])]

def report():
    heavy = sorted({m.split(".")[0] for m in sys.modules} & watch)
    sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
    sys.stderr.flush()

atexit.register(report)
runpy.run_module("orch", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["upgrade", "--help"], ["status", "-h"], ["lint", "--help"]]
)
def test_help_and_version_import_no_database_machinery(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "orch" in r.stdout
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("HEAVY=")]
    assert line, r.stderr
    assert json.loads(line[0][len("HEAVY=") :]) == []


MAKO_PROBE = """
import atexit, json, runpy, sys

def report():
    found = "pygments" in sys.modules
    import mako.ext.pygmentplugin  # the hook removed itself: imports as usual again
    sys.stderr.write("PYGMENTS=" + json.dumps([found, "pygments" in sys.modules]) + "\\n")
    sys.stderr.flush()

atexit.register(report)
sys.argv = ["orch", "upgrade", "--all"]
runpy.run_module("orch", run_name="__main__", alter_sys=True)
"""


def test_a_migration_run_does_not_import_pygments_for_mako(tmp_path: Path) -> None:
    """Mako (through Alembic) would import Pygments, 0.1 s of CPU for HTML error pages."""
    pytest.importorskip("pygments")
    p = sqlite_project(tmp_path, 2, 2)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(
        [sys.executable, "-c", MAKO_PROBE], cwd=p.root, env=env, capture_output=True, text=True
    )
    assert r.stdout.count("done") == 2, r.stdout + r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("PYGMENTS=")]
    assert line, r.stderr
    assert json.loads(line[0][len("PYGMENTS=") :]) == [False, True]


# ---------------------------------------------------------------- the benchmark itself


def test_benchmark_quick_mode_runs_prints_its_tables_and_cleans_up(tmp_path: Path) -> None:
    """``bench/run.py --quick`` (tiny sizes) runs every scenario and drops its databases."""
    require_server("postgresql")
    env = {**os.environ, "ORCH_TEST_POSTGRES_URL": PG_URL}
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path / "b")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for needle in (
        "SCENARIO",
        "status, SQLite",
        "status, PostgreSQL",
        "upgrade --all, PostgreSQL",
        "orch --help",
        "PostgreSQL fleet",
        "GOAL",
        "ALEMBIC LOOP",
        "FLOOR",
        "PEAK",
    ):
        assert needle in out, out
    prefix = next(
        ln.split()[2].rstrip("*") for ln in out.splitlines() if ln.startswith("scratch databases:")
    )
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(PG_URL, poolclass=NullPool)
    with eng.connect() as c:
        left = c.execute(
            text("SELECT count(*) FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "%"}
        ).scalar()
    assert left == 0
