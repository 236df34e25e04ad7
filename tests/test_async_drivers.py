"""Async driver URLs, as FastAPI-style applications configure them, on the real servers.

``postgresql+asyncpg://``, ``sqlite+aiosqlite://``, ``mysql+aiomysql://`` and
``mysql+asyncmy://`` are accepted as written; migrations run through that
driver (a revision records ``op.get_bind().dialect.driver`` to prove it) with
every promise of the sync drivers: the lock, the timeouts, one transaction per
revision, dirty on MariaDB, the audit rows, graceful stop, hooks.  Read-only
commands read through the sync driver of the same server with the same
results; the URL shown stays the user's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Project, require_server
from test_guardrails import (
    ANALYTICS_HEAD,
    CORE_HEAD,
    FAIL_HALF_WAY,
    NEXT_REV,
    SLOW_REV,
    add_revision,
    current,
    log_rows,
    start_slow_run,
    tables,
    with_password,
)
from test_registry import load, reasons
from test_status_envs import silent_port  # noqa: F401  (fixture)

# (backend, async driver); asyncmy too: it installs here from a wheel
CASES = [
    ("postgresql", "asyncpg"),
    ("sqlite", "aiosqlite"),
    ("mysql", "aiomysql"),
    ("mysql", "asyncmy"),
]
DRIVER_REV = "a5a5c0ffee01"
RECORD_DRIVER = """    op.create_table("driver_seen", sa.Column("name", sa.String(32)))
    name = op.get_bind().dialect.driver
    op.execute(sa.text("INSERT INTO driver_seen (name) VALUES (:n)").bindparams(n=name))"""


def as_async(url: str, driver: str) -> str:
    """The same database's URL through *driver* (``mysql+pymysql://`` -> ``mysql+aiomysql://``)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}+{driver}://{rest}"


@dataclass
class Case:
    project: Project
    kind: str
    driver: str
    sync: dict[str, str]  # the same databases through the sync driver (the test's own reads)

    @property
    def urls(self) -> dict[str, str]:
        return {n: as_async(u, self.driver) for n, u in self.sync.items()}


@pytest.fixture(params=CASES, ids=[d for _, d in CASES])
def case(
    request: pytest.FixtureRequest, project: Project, make_db: Callable[..., str], tmp_path: Path
) -> Case:
    """The reference project whose ``dev`` environment uses async URLs."""
    kind, driver = request.param
    require_server(kind)
    if kind == "sqlite":
        d = tmp_path / "async-dbs"
        sync = {"core": f"sqlite:///{d / 'core.db'}", "analytics": f"sqlite:///{d / 'an.db'}"}
    else:
        sync = {"core": make_db(kind), "analytics": make_db(kind)}
    c = Case(project, kind, driver, sync)
    project.set_urls("dev", c.urls)
    return c


def driver_seen(url: str) -> list[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    with create_engine(url, poolclass=NullPool).connect() as c:
        return [str(x) for x in c.execute(text("SELECT name FROM driver_seen")).scalars()]


def test_upgrade_status_downgrade_through_the_async_driver(case: Case) -> None:
    p = case.project
    undo = '    op.drop_table("driver_seen")'
    add_revision(p, "core", DRIVER_REV, CORE_HEAD, RECORD_DRIVER, undo)
    r = p.orch("upgrade", "--all", "--jobs", "2", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert [d["outcome"] for d in r.json()["databases"]] == ["done", "done"]
    # the revision ran through the async driver, not its sync twin
    assert driver_seen(case.sync["core"]) == [case.driver]
    assert current(case.sync["core"]) == [DRIVER_REV]
    assert current(case.sync["analytics"]) == [ANALYTICS_HEAD]
    # status reads the same rows; the URL shown is the one the user wrote
    doc = p.orch("status", "--json").json()
    rows = {d["name"]: d for d in doc["databases"]}
    assert {n: d["state"] for n, d in rows.items()} == {
        "core": "up_to_date",
        "analytics": "up_to_date",
    }
    assert rows["core"]["current"] == [DRIVER_REV]
    assert rows["core"]["url"].split("://")[0].endswith(f"+{case.driver}")
    assert p.orch("status", "--check").exit_code == 0
    # one audit row per revision, ok
    entries = p.orch("log", "core", "--json").json()["entries"]
    ups = [e for e in entries if e["direction"] == "upgrade"]
    assert len(ups) == 5 and {e["outcome"] for e in ups} == {"ok"}
    # downgrade, dependents first
    r = p.orch("downgrade", "analytics@base", "core@-1", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert current(case.sync["core"]) == [CORE_HEAD]
    assert "driver_seen" not in tables(case.sync["core"])
    assert current(case.sync["analytics"]) == []
    states = {d["name"]: d["state"] for d in p.orch("status", "--json").json()["databases"]}
    assert states == {"core": "behind", "analytics": "behind"}
    assert p.orch("upgrade", "--all", "--jobs", "1").exit_code == 0
    assert driver_seen(case.sync["core"]) == [case.driver]


GATED = """    op.create_table("gated_done", sa.Column("id", sa.Integer, primary_key=True))
    Path(os.environ["ORCH_TEST_MARK"]).touch()
    gate = Path(os.environ["ORCH_TEST_GATE"])
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)"""


@pytest.fixture
def holding_run(case: Case, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``orch upgrade core`` (async URL) in a subprocess, held inside a revision until the gate."""
    p = case.project
    assert p.orch("upgrade", "core").exit_code == 0
    add_revision(p, "core", "9a7ec0ffee01", CORE_HEAD, GATED, '    op.drop_table("gated_done")')
    mark, gate = tmp_path / "held.mark", tmp_path / "held.gate"
    env = {**os.environ, "ORCH_TEST_MARK": str(mark), "ORCH_TEST_GATE": str(gate)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orch", "upgrade", "core", "--json"],
        cwd=p.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the held revision never started"
            time.sleep(0.02)
        yield proc, gate
    finally:
        gate.touch()
        proc.wait(timeout=60)


def test_the_lock_is_held_against_a_concurrent_run(
    case: Case, holding_run: tuple[subprocess.Popen[str], Path]
) -> None:
    """While an async-driver run migrates core, other runs (async or sync URL) get ``locked``."""
    p = case.project
    proc, gate = holding_run
    r = p.orch("upgrade", "core", "--lock-timeout", "0.5", "--json")
    assert r.exit_code == 3, r.stdout + r.stderr
    (core,) = r.json()["databases"]
    assert core["outcome"] == "locked"
    # the same lock whatever the driver: a sync URL of the same database waits too
    p.set_urls("staging", case.sync)
    r = p.orch("--env", "staging", "upgrade", "core", "--lock-timeout", "0.5", "--json")
    assert r.exit_code == 3, r.stdout + r.stderr
    assert r.json()["databases"][0]["outcome"] == "locked"
    states = {d["name"]: d["state"] for d in p.orch("status", "--json").json()["databases"]}
    assert states["core"] == "running"
    gate.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["databases"][0]["outcome"] == "done"
    assert current(case.sync["core"]) == ["9a7ec0ffee01"]
    r = p.orch("upgrade", "core", "--lock-timeout", "0.5")
    assert r.exit_code == 0, r.stderr  # released with the run


def test_a_failing_revision_rolls_back_or_leaves_mariadb_dirty(case: Case) -> None:
    """One transaction per revision; MariaDB cannot roll DDL back: dirty, named, refused."""
    p = case.project
    bad = "bad0c0ffee01"
    add_revision(p, "core", bad, CORE_HEAD, FAIL_HALF_WAY, "    pass")
    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 1
    core, analytics = r.json()["databases"]
    assert core["outcome"] == "failed" and core["revision"] == bad
    assert "boom: half-way" in core["error"]
    assert analytics["outcome"] == "skipped"
    assert current(case.sync["core"]) == [CORE_HEAD]  # stopped at the last good revision
    rows = log_rows(case.sync["core"])
    assert (rows[-1]["revision"], rows[-1]["outcome"]) == (bad, "failed")
    status = {d["name"]: d for d in p.orch("status", "--json").json()["databases"]}
    if case.kind == "mysql":
        assert core["dirty"] is True
        assert "half_done" in tables(case.sync["core"])  # the DDL stayed
        assert status["core"]["state"] == "dirty" and bad in status["core"]["error"]
        r = p.orch("upgrade", "core", "--json")
        assert r.json()["databases"][0]["outcome"] == "refused"
    else:
        assert core["dirty"] is False
        assert "half_done" not in tables(case.sync["core"])  # rolled back with the revision
        assert status["core"]["state"] == "behind"


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["asyncpg", "aiomysql"], indirect=True)
def test_hooks_get_the_login_of_the_async_url(
    case: Case, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """Host, port, user, database and the password (PGPASSWORD/MYSQL_PWD) as with a sync URL.

    MariaDB checks passwords: the migration itself connecting through
    aiomysql with the login proves the password reached the async driver.
    """
    from sqlalchemy.engine import make_url

    p = case.project
    core, pw = with_password(make_db, case.kind)
    urls = {"core": as_async(core, case.driver), "analytics": case.urls["analytics"]}
    hook = "printf '%s|%s|%s|%s|%s\\n' {host} {port} {user} {database} \"$PGPASSWORD$MYSQL_PWD\""
    p.set_urls("dev", urls, hooks={"before_upgrade": hook + " >> hooks.log"})
    r = p.orch("upgrade", "core")
    assert r.exit_code == 0, r.stderr
    u = make_url(core)
    line = (p.root / "hooks.log").read_text().splitlines()[0]
    assert line.split("|") == [u.host, str(u.port or 5432), u.username, u.database, pw]
    assert pw not in r.stdout + r.stderr
    assert all(pw not in str(row) for row in log_rows(core))
    assert current(core) == [CORE_HEAD]


@pytest.mark.parametrize(
    ("case", "jobs"),
    [(CASES[0], "1"), (CASES[0], "2"), (CASES[1], "1"), (CASES[2], "2")],
    ids=["asyncpg-inline", "asyncpg-workers", "aiosqlite-inline", "aiomysql-workers"],
    indirect=["case"],
)
def test_second_signal_aborts_the_revision_in_flight(case: Case, tmp_path: Path, jobs: str) -> None:
    """Graceful stop under an async driver: the second SIGINT aborts the awaited statement.

    On PostgreSQL the slow revision waits in ``pg_sleep`` on the server, so
    the signal lands while the event loop awaits asyncpg: the statement is
    cancelled and the revision rolled back.  Elsewhere it sleeps in its own
    Python code.  MariaDB keeps the DDL that ran: dirty.
    """
    p = case.project
    proc, _ = start_slow_run(p, tmp_path, "--jobs", jobs, "--json")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    core, analytics = json.loads(out)["databases"]
    assert core["outcome"] == "failed" and core["revision"] == SLOW_REV
    assert analytics["outcome"] == "skipped"
    assert current(case.sync["core"]) == [CORE_HEAD]
    if case.kind == "mysql":
        assert core["dirty"] is True and "aborted half-way" in core["error"]
        assert "dirty" in p.orch("status").stdout
    else:
        assert "aborted and rolled back" in core["error"]
        assert "slow_done" not in tables(case.sync["core"])
        r = p.orch("upgrade", "--all", "--lock-timeout", "5")  # no stale lock
        assert r.exit_code == 0, r.stderr
        assert current(case.sync["core"]) == [NEXT_REV]


@pytest.mark.parametrize("case", [CASES[0]], ids=["asyncpg"], indirect=True)
def test_first_signal_finishes_the_revision_in_flight(case: Case, tmp_path: Path) -> None:
    p = case.project
    proc, _ = start_slow_run(p, tmp_path, "--jobs", "2", "--json")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    core, _ = json.loads(out)["databases"]
    assert core["applied"][-1] == SLOW_REV and "interrupted by SIGTERM" in core["error"]
    assert current(case.sync["core"]) == [SLOW_REV]
    assert "next_done" not in tables(case.sync["core"])


@pytest.mark.parametrize("driver", ["asyncpg", "aiomysql", "asyncmy"])
def test_connect_timeout_covers_a_host_that_never_answers(
    project: Project,
    silent_port: int,  # noqa: F811
    driver: str,
) -> None:
    """TCP accepted, no greeting: the connect gives up after connect_timeout, not never."""
    family = "postgresql" if driver == "asyncpg" else "mysql"
    url = f"{family}+{driver}://app:pw-hidden-1@127.0.0.1:{silent_port}/core"
    data = project.registry()
    data["settings"]["connect_timeout"] = 1
    project.write_registry(data)
    project.set_urls("dev", {"core": url, "analytics": url.replace("/core", "/an")})
    t0 = time.monotonic()
    r = project.orch_proc("upgrade", "core", "--json", timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    core = json.loads(r.stdout)["databases"][0]
    assert core["outcome"] == "failed" and core["error"].startswith("unreachable")
    assert "time" in core["error"].lower()
    assert elapsed < 20, elapsed
    assert "pw-hidden-1" not in r.stdout + r.stderr


@pytest.mark.parametrize("case", [CASES[0]], ids=["asyncpg"], indirect=True)
def test_asyncpg_only_url_options_do_not_break_the_reads(case: Case) -> None:
    """``ssl=`` and asyncpg's statement-cache option: upgrade uses them, status reads the same."""
    p = case.project
    urls = {n: u + "?ssl=disable&prepared_statement_cache_size=0" for n, u in case.urls.items()}
    p.set_urls("dev", urls)
    assert p.orch("upgrade", "--all").exit_code == 0
    doc = p.orch("status", "--json").json()
    assert {d["state"] for d in doc["databases"]} == {"up_to_date"}
    assert p.orch("history", "core").exit_code == 0
    assert p.orch("plan", "--all").exit_code == 0


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[2], CASES[3]], ids=["asyncpg", "aiomysql", "asyncmy"], indirect=True
)
def test_offline_sql_is_the_same_as_the_sync_drivers(case: Case) -> None:
    p = case.project
    assert p.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    p.set_urls("staging", case.sync)
    ours = p.orch("upgrade", "--all", "--sql")
    theirs = p.orch("--env", "staging", "upgrade", "--all", "--sql")
    assert ours.exit_code == 0 and theirs.exit_code == 0, ours.stderr + theirs.stderr
    assert ours.stdout.replace("dev", "ENV") == theirs.stdout.replace("staging", "ENV")
    assert "CREATE TABLE" in ours.stdout


# ---------------------------------------------------------------- registry


def one_url(url: str) -> str:
    return f'databases: {{core: {{}}}}\nenvironments: {{dev: {{urls: {{core: "{url}"}}}}}}'


def test_async_urls_are_accepted(tmp_path: Path) -> None:
    text = """
        databases: {a: {}, b: {}, c: {}, d: {}, e: {}, f: {}}
        environments:
          dev:
            urls:
              a: "postgresql+asyncpg://u:pw@h/a"
              b: "sqlite+aiosqlite:///var/b.db"
              c: "mysql+aiomysql://u@h/c"
              d: "mariadb+aiomysql://u@h/d"
              e: "mysql+asyncmy://u@h:3307/e"
              f: "mariadb+asyncmy://u@h/f"
        """
    assert set(load(tmp_path, text).databases) == {"a", "b", "c", "d", "e", "f"}


@pytest.mark.parametrize(
    ("url", "module"),
    [("postgresql+asyncpg://u@h/db", "asyncpg"), ("mysql+asyncmy://u@h/db", "asyncmy")],
)
def test_an_async_driver_that_is_not_installed_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, module: str
) -> None:
    from orch import backends

    monkeypatch.setitem(sys.modules, module, None)  # Python's own "not importable" marker
    backends._installed.cache_clear()
    try:
        got = reasons(tmp_path, one_url(url))
    finally:
        backends._installed.cache_clear()
    msg = got["environments.dev.urls.core"]
    assert f"needs driver {module}, which is not installed; pip install {module}" in msg
    assert "orch[async]" in msg


def test_other_async_drivers_name_the_supported_ones(tmp_path: Path) -> None:
    url = "postgresql+psycopg_async://u@h/db"
    got = reasons(tmp_path, one_url(url))
    msg = got["environments.dev.urls.core"]
    assert "use postgresql+psycopg:// instead" in msg and "postgresql+asyncpg://" in msg


def test_sync_url_keeps_the_server_and_login() -> None:
    from orch.backends import sync_url

    assert sync_url("postgresql+asyncpg://u:p@h:5433/db?ssl=require&application_name=x") == (
        "postgresql+psycopg://u:p@h:5433/db?sslmode=require&application_name=x"
    )
    assert sync_url("postgresql+asyncpg://u@h/db?prepared_statement_cache_size=0") == (
        "postgresql+psycopg://u@h/db"
    )
    assert sync_url("mariadb+asyncmy://u@h/db?charset=utf8mb4") == (
        "mariadb+pymysql://u@h/db?charset=utf8mb4"
    )
    assert sync_url("sqlite+aiosqlite:///var/x.db") == "sqlite:///var/x.db"
    assert sync_url("mysql+pymysql://u@h/db") == "mysql+pymysql://u@h/db"


# ---------------------------------------------------------------- faults


def test_sigkilled_asyncpg_run_leaves_no_lock(make_db: Callable[..., str], tmp_path: Path) -> None:
    """The async session gets client_connection_check_interval too: a killed run's lock dies."""
    from minproj import rev_id, version_of
    from test_safety import SLOW_PG, _slow_project, pg_backends_running, popen, wait_for

    url = make_db("postgresql")
    p = _slow_project(tmp_path, {"app": as_async(url, "asyncpg")}, SLOW_PG)
    proc = popen(p, "upgrade", "--all", env={"ORCH_TEST_SLOW": "1"}, capture=False)
    try:
        wait_for(lambda: pg_backends_running(url, "pg_sleep") == 1)
    finally:
        proc.kill()
        proc.wait()
    # pg_sleep(30) is still running on the server unless it noticed the dead client
    r = p.orch("upgrade", "--all", "--lock-timeout", "5")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "interrupted" in r.stderr
    assert version_of(url) == [rev_id("app", 2)]


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["asyncpg", "aiomysql"], indirect=True)
def test_ddl_lock_timeout_applies_to_the_async_session(case: Case) -> None:
    """settings.ddl_lock_timeout: the ALTER behind a reader's transaction fails fast, not hangs."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    p = case.project
    data = p.registry()
    data["settings"]["ddl_lock_timeout"] = 1
    p.write_registry(data)
    assert p.orch("upgrade", "core@d5d862ab0321").exit_code == 0
    holder = create_engine(case.sync["core"], poolclass=NullPool).connect()
    try:
        holder.execute(text("SELECT * FROM users"))  # an open transaction that read users
        r = p.orch_proc("upgrade", "core", "--json", timeout=60)
        assert r.returncode == 1, r.stderr
        core = json.loads(r.stdout)["databases"][0]
        assert core["outcome"] == "failed" and core["revision"] == "23231312a907"
        assert "lock" in core["error"].lower()
    finally:
        holder.rollback()
        holder.close()
    assert current(case.sync["core"]) == ["d5d862ab0321"]
    assert p.orch("upgrade", "--all").exit_code == 0
