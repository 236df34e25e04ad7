"""Behaviour under faults (docs/guide/faults.md) on the real servers.

Races between orch processes, a SIGKILLed run (inline and with worker
processes), one transaction per revision, the fleet failure policy, locks
held elsewhere (exit 3, ``running``), and the dirty state of MySQL/MariaDB.
Each test builds its own small project (tests/minproj.py) so revisions can
fail, sleep or half-apply on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from minproj import Rev, log_rows, make_project, rev_id, table_names, version_of

MakeDb = Callable[..., str]

SLOW_PG = 'if os.environ.get("ORCH_TEST_SLOW"):\n    op.execute("SELECT pg_sleep(30)")'
SLOW_MY = 'if os.environ.get("ORCH_TEST_SLOW"):\n    op.execute("SELECT SLEEP(2)")'


def popen(
    p: Project, *args: str, env: dict[str, str] | None = None, capture: bool = True
) -> subprocess.Popen[str]:
    """``python -m orch`` in the background.  ``capture=False`` for runs that get killed:
    orphaned workers would hold captured pipes open and hang the test instead of failing it.
    """
    sink = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "orch", *args],
        cwd=p.root,
        env={**os.environ, **(env or {})},
        stdout=sink,
        stderr=sink,
        text=True,
    )


def wait_for(what: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def wait_for_running(url: str, rev: str) -> None:
    """Until *rev*'s audit row says ``running`` (the row of that revision, not an earlier one)."""
    wait_for(lambda: (rev, "running") in [(x["revision"], x["outcome"]) for x in log_rows(url)])


def state_of(p: Project, db: str) -> dict[str, Any]:
    doc = p.orch("status", db, "--json").json()
    return dict(doc["databases"][0])


def children(pid: int) -> list[int]:
    """Child processes of *pid* (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pg_backends_running(url: str, needle: str) -> int:
    """Server sessions of the database at *url* whose current query contains *needle*."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            return int(
                c.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                        "AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE :q"
                    ),
                    {"d": make_url(url).database, "q": f"%{needle}%"},
                ).scalar()
                or 0
            )
    finally:
        eng.dispose()


# ---------------------------------------------------------------- one transaction per revision


def test_failure_at_revision_2_keeps_revision_1_committed(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """The autobegin trap: without a commit per revision, revision 1 would roll back too."""
    url = make_db(backend)
    p = make_project(
        tmp_path / "p",
        {
            "app": [
                Rev(up=["CREATE TABLE t1 (id INTEGER PRIMARY KEY)"], down=["DROP TABLE t1"]),
                Rev(up=["CREATE TABLE t2 (id INTEGER PRIMARY KEY)", "SELECT * FROM no_such_t"]),
                Rev(up=["CREATE TABLE t3 (id INTEGER PRIMARY KEY)"]),
            ]
        },
        {"app": url},
    )
    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 1, r.stdout + r.stderr
    doc = r.json()
    (app,) = doc["databases"]
    assert app["outcome"] == "failed"
    assert app["revision"] == rev_id("app", 2)
    assert app["applied"] == [rev_id("app", 1)]
    assert app["to"] == [rev_id("app", 1)]
    assert "no_such_t" in app["error"]
    assert version_of(url) == [rev_id("app", 1)]
    tables = table_names(url)
    assert "t1" in tables and "t3" not in tables
    rows = [(x["revision"], x["outcome"]) for x in log_rows(url)]
    assert rows == [(rev_id("app", 1), "ok"), (rev_id("app", 2), "failed")]
    st = state_of(p, "app")
    if backend == "mysql":  # DDL committed implicitly: t2 stays, the database is dirty
        assert "t2" in tables
        assert app["dirty"] is True
        assert st["state"] == "dirty" and rev_id("app", 2) in st["error"]
    else:  # rolled back as a whole: simply behind
        assert "t2" not in tables
        assert app["dirty"] is False
        assert st["state"] == "behind" and st["current"] == [rev_id("app", 1)]


# ---------------------------------------------------------------- fleet failure policy


def _fleet(tmp_path: Path, make_db: MakeDb) -> tuple[Project, dict[str, str]]:
    """base <- broken <- dependent; lone is independent.  broken fails at revision 2."""
    urls = {n: make_db("postgresql") for n in ("base", "broken", "dependent", "lone")}
    ok = [Rev(up=["CREATE TABLE a (id int)"]), Rev(up=["CREATE TABLE b (id int)"])]
    p = make_project(
        tmp_path / "fleet",
        {
            "base": ok,
            "broken": [Rev(up=["CREATE TABLE a (id int)"]), Rev(up=["SELECT 1/0"])],
            "dependent": ok,
            "lone": ok,
        },
        urls,
        depends={"broken": ["base"], "dependent": ["broken"]},
    )
    return p, urls


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_fleet_failure_skips_dependents_and_finishes_the_rest(
    make_db: MakeDb, tmp_path: Path, jobs: str
) -> None:
    p, urls = _fleet(tmp_path, make_db)
    r = p.orch("upgrade", "--all", "--jobs", jobs)
    assert r.exit_code == 1, r.stdout + r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert lines["broken"].split()[1] == "failed"
    assert rev_id("broken", 2) in lines["broken"] and "division by zero" in lines["broken"]
    assert lines["dependent"].split()[1] == "skipped" and "broken failed" in lines["dependent"]
    assert lines["base"].split()[1] == "done"
    assert lines["lone"].split()[1] == "done"
    assert version_of(urls["base"]) == [rev_id("base", 2)]
    assert version_of(urls["lone"]) == [rev_id("lone", 2)]
    assert version_of(urls["broken"]) == [rev_id("broken", 1)]
    assert table_names(urls["dependent"]) == set()  # never touched, not even orch_log
    assert "password" not in r.stdout + r.stderr


def test_fleet_failure_json_names_every_outcome(make_db: MakeDb, tmp_path: Path) -> None:
    p, _ = _fleet(tmp_path, make_db)
    doc = p.orch("upgrade", "--all", "--json").json()
    assert doc["exit_code"] == 1
    out = {d["name"]: d for d in doc["databases"]}
    assert {n: d["outcome"] for n, d in out.items()} == {
        "base": "done",
        "broken": "failed",
        "dependent": "skipped",
        "lone": "done",
    }
    assert out["broken"]["revision"] == rev_id("broken", 2)
    assert "division by zero" in out["broken"]["error"]
    assert "broken" in doc["error"] and "dependent" in doc["error"]


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_a_skipped_database_still_says_where_it_stands(
    make_db: MakeDb, tmp_path: Path, jobs: str
) -> None:
    """``upgrade --all`` plans without reading the databases; a skipped one is read after."""
    p, urls = _fleet(tmp_path, make_db)
    one = rev_id("dependent", 1)
    assert p.orch("upgrade", f"dependent@{one}", "--ignore-deps").exit_code == 0
    doc = p.orch("upgrade", "--all", "--jobs", jobs, "--json").json()
    out = {d["name"]: d for d in doc["databases"]}
    assert out["dependent"]["outcome"] == "skipped"
    assert out["dependent"]["from"] == out["dependent"]["to"] == [one]
    assert out["base"]["from"] == [] and out["base"]["to"] == [rev_id("base", 2)]
    assert version_of(urls["dependent"]) == [one]


def test_fail_fast_starts_nothing_after_the_first_failure(make_db: MakeDb, tmp_path: Path) -> None:
    urls = {n: make_db("postgresql") for n in ("first", "second")}
    p = make_project(
        tmp_path / "ff",
        {"first": [Rev(up=["SELECT 1/0"])], "second": [Rev(up=["CREATE TABLE a (id int)"])]},
        urls,
    )
    doc = p.orch("upgrade", "--all", "--jobs", "1", "--fail-fast", "--json").json()
    out = {d["name"]: d for d in doc["databases"]}
    assert out["first"]["outcome"] == "failed"
    assert out["second"]["outcome"] == "skipped" and "fail-fast" in out["second"]["error"]
    assert table_names(urls["second"]) == set()
    # without --fail-fast the independent database goes on
    doc = p.orch("upgrade", "--all", "--jobs", "1", "--json").json()
    assert {d["name"]: d["outcome"] for d in doc["databases"]} == {
        "first": "failed",
        "second": "done",
    }


# ---------------------------------------------------------------- locks


@contextlib.contextmanager
def hold_lock(p: Project, backend: str, url: str, db: str) -> Iterator[None]:
    """Hold *db*'s migration lock the way another orch would, from this process."""
    from orch.config.registry import load_registry, sqlite_path
    from orch.store.db import lock_path
    from orch.store.locks import lock_name, pg_key

    spec = load_registry(p.registry_path).database(db)
    if backend == "sqlite":
        path = sqlite_path(url)
        assert path is not None
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        if backend == "postgresql":
            c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": pg_key(spec)})
        else:
            assert c.execute(text("SELECT GET_LOCK(:n, 1)"), {"n": lock_name(spec, url)}).scalar()
        yield
    eng.dispose()


def test_lock_held_elsewhere_gives_locked_and_exit_3(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db(backend)
    p = make_project(tmp_path / "p", {"app": [Rev(up=["CREATE TABLE a (id int)"])]}, {"app": url})
    with hold_lock(p, backend, url, "app"):
        assert state_of(p, "app")["state"] == "running"
        r = p.orch("upgrade", "--all", "--lock-timeout", "0.3", "--json")
        assert r.exit_code == 3, r.stdout + r.stderr
        (app,) = r.json()["databases"]
        assert app["outcome"] == "locked" and "lock" in app["error"]
        r = p.orch("stamp", f"app@{rev_id('app', 1)}", "--lock-timeout", "0")
        assert r.exit_code == 3
    assert version_of(url) == []
    assert state_of(p, "app")["state"] == "behind"
    assert p.orch("upgrade", "--all", "--lock-timeout", "0").exit_code == 0


def test_mysql_locks_of_two_databases_on_one_server_are_apart(
    make_db: MakeDb, tmp_path: Path
) -> None:
    """GET_LOCK names are server-wide: the lock of one database must not block another."""
    a, b = make_db("mysql"), make_db("mysql")
    rev = [Rev(up=["CREATE TABLE a (id int)"])]
    p = make_project(tmp_path / "p", {"one": rev, "two": rev}, {"one": a, "two": b})
    with hold_lock(p, "mysql", a, "one"):
        doc = p.orch("upgrade", "--all", "--lock-timeout", "0.2", "--json").json()
        assert {d["name"]: d["outcome"] for d in doc["databases"]} == {
            "one": "locked",
            "two": "done",
        }
        assert state_of(p, "two")["state"] == "up_to_date"
    assert doc["exit_code"] == 3


def test_six_racing_upgrades_apply_each_revision_once(
    backend_project: Project, backend: str
) -> None:
    """Six orch processes at once on the same databases: each revision runs exactly once."""
    project = backend_project
    urls = {
        name: url if not url.startswith("sqlite:///var") else f"sqlite:///{project.root}/{url[10:]}"
        for name, url in project.registry()["environments"]["dev"]["urls"].items()
    }
    procs = [popen(project, "upgrade", "--all", "--json") for _ in range(6)]
    for pr in procs:
        out, err = pr.communicate(timeout=120)
        assert pr.returncode == 0, out + err
        outcomes = {d["outcome"] for d in json.loads(out)["databases"]}
        assert outcomes <= {"done", "unchanged"}
    for name, url in urls.items():
        rows = [x for x in log_rows(url) if x["direction"] == "upgrade"]
        revs = [x["revision"] for x in rows]
        assert len(revs) == 4 and len(set(revs)) == 4, (name, revs)
        assert all(x["outcome"] == "ok" for x in rows)
    states = project.orch("status", "--json").json()["databases"]
    assert [d["state"] for d in states] == ["up_to_date", "up_to_date"]


def test_workers_are_spawned_not_forked_while_other_threads_run(tmp_path: Path) -> None:
    """Forking with another thread alive can copy a held lock into the worker (it then hangs
    forever); orch embedded in a threaded program spawns fresh workers instead."""
    import threading

    from orch.run.execute import start_method

    assert start_method() == ("fork" if threading.active_count() == 1 else "spawn")
    urls = {n: f"sqlite:///{tmp_path / n}.db" for n in ("one", "two")}
    p = make_project(tmp_path / "p", {n: [Rev(up=["CREATE TABLE a (id int)"])] for n in urls}, urls)
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)
    busy.start()
    try:
        assert start_method() == "spawn"
        r = p.orch("upgrade", "--all", "--jobs", "2")
    finally:
        stop.set()
        busy.join()
    assert r.exit_code == 0, r.stdout + r.stderr
    assert all(version_of(u) == [rev_id(n, 1)] for n, u in urls.items())


# ---------------------------------------------------------------- killed runs


def _slow_project(tmp_path: Path, urls: dict[str, str], slow: str) -> Project:
    return make_project(
        tmp_path / "slow",
        {
            name: [
                Rev(up=["CREATE TABLE a (id int)"]),
                Rev(code=slow, up=["CREATE TABLE b (id int)"]),
            ]
            for name in urls
        },
        urls,
    )


def test_sigkilled_run_leaves_no_lock_and_the_rerun_succeeds(
    make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db("postgresql")
    p = _slow_project(tmp_path, {"app": url}, SLOW_PG)
    proc = popen(p, "upgrade", "--all", env={"ORCH_TEST_SLOW": "1"}, capture=False)
    try:
        wait_for(lambda: pg_backends_running(url, "pg_sleep") == 1)
        assert state_of(p, "app")["state"] == "running"
        running = [x for x in log_rows(url) if x["outcome"] == "running"]
        assert [x["revision"] for x in running] == [rev_id("app", 2)]
    finally:
        proc.kill()
        proc.wait()
    # the server notices the dead client within ~1 s (client_connection_check_interval)
    # and drops the session with its lock: a 5 s lock timeout is plenty
    r = p.orch("upgrade", "--all", "--lock-timeout", "5")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "interrupted" in r.stderr
    assert version_of(url) == [rev_id("app", 2)]
    assert pg_backends_running(url, "pg_sleep") == 0
    rows = [(x["revision"], x["outcome"]) for x in log_rows(url)]
    assert rows == [
        (rev_id("app", 1), "ok"),
        (rev_id("app", 2), "failed"),
        (rev_id("app", 2), "ok"),
    ]
    assert "interrupted" in log_rows(url)[1]["error"]


def test_sigkilled_sqlite_run_rolls_back_and_frees_its_lock_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    slow = (
        'op.execute("CREATE TABLE half (id int)")\n'
        'if os.environ.get("ORCH_TEST_SLOW"):\n'
        "    import time\n"
        "    time.sleep(30)"
    )
    p = _slow_project(tmp_path, {"app": url}, slow)
    proc = popen(p, "upgrade", "--all", env={"ORCH_TEST_SLOW": "1"}, capture=False)
    try:
        wait_for(lambda: state_of(p, "app")["state"] == "running")
        wait_for_running(url, rev_id("app", 2))
    finally:
        proc.kill()
        proc.wait()
    assert state_of(p, "app")["state"] == "behind"  # the flock died with the process
    r = p.orch("upgrade", "--all", "--lock-timeout", "0")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert version_of(url) == [rev_id("app", 2)]
    assert {"a", "b", "half"} <= table_names(url)
    rows = [(x["revision"], x["outcome"]) for x in log_rows(url)]
    assert rows[-2:] == [(rev_id("app", 2), "failed"), (rev_id("app", 2), "ok")]


def test_session_killed_by_a_dba_fails_cleanly_and_the_rerun_succeeds(
    make_db: MakeDb, tmp_path: Path
) -> None:
    """pg_terminate_backend mid-revision: a clear failure naming the revision, then recovery."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_db("postgresql")
    p = _slow_project(tmp_path, {"app": url}, SLOW_PG)
    proc = popen(p, "upgrade", "--all", "--json", env={"ORCH_TEST_SLOW": "1"})
    wait_for(lambda: pg_backends_running(url, "pg_sleep") == 1)
    eng = create_engine(url, poolclass=NullPool)
    with eng.connect() as c:
        c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :d AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            ),
            {"d": make_url(url).database},
        )
    eng.dispose()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    (app,) = json.loads(out)["databases"]
    assert app["outcome"] == "failed" and app["revision"] == rev_id("app", 2)
    assert app["applied"] == [rev_id("app", 1)] and app["dirty"] is False
    r = p.orch("upgrade", "--all", "--lock-timeout", "5")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert version_of(url) == [rev_id("app", 2)]
    rows = [(x["revision"], x["outcome"]) for x in log_rows(url)]
    assert rows == [
        (rev_id("app", 1), "ok"),
        (rev_id("app", 2), "failed"),
        (rev_id("app", 2), "ok"),
    ]


def test_sigkilled_parent_takes_its_workers_along(make_db: MakeDb, tmp_path: Path) -> None:
    """Workers get PR_SET_PDEATHSIG: killing orch ends them and their server sessions."""
    urls = {"one": make_db("postgresql"), "two": make_db("postgresql")}
    p = _slow_project(tmp_path, urls, SLOW_PG)
    proc = popen(p, "upgrade", "--all", "--jobs", "2", env={"ORCH_TEST_SLOW": "1"}, capture=False)
    try:
        wait_for(lambda: all(pg_backends_running(u, "pg_sleep") == 1 for u in urls.values()))
        workers = children(proc.pid)
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    try:
        wait_for(lambda: not any(alive(w) for w in workers), timeout=5)
    finally:  # if the test fails, do not leave its orphans behind
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)
    r = p.orch("upgrade", "--all", "--lock-timeout", "5")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert all(version_of(u) == [rev_id(n, 2)] for n, u in urls.items())


def test_mysql_run_killed_half_way_leaves_the_database_dirty(
    make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db("mysql")
    p = _slow_project(tmp_path, {"app": url}, SLOW_MY)
    proc = popen(p, "upgrade", "--all", env={"ORCH_TEST_SLOW": "1"}, capture=False)
    try:
        wait_for_running(url, rev_id("app", 2))
        time.sleep(0.3)  # its first statement has started
    finally:
        proc.kill()
        proc.wait()
    # the server finishes the statement (MySQL cannot notice a dead client in SLEEP),
    # then drops the connection and its GET_LOCK
    r = p.orch("upgrade", "--all", "--lock-timeout", "10", "--json")
    assert r.exit_code == 1
    (app,) = r.json()["databases"]
    assert app["outcome"] == "refused" and app["dirty"] is True
    assert app["revision"] == rev_id("app", 2) and "stamp" in app["error"]
    st = state_of(p, "app")
    assert st["state"] == "dirty" and rev_id("app", 2) in st["error"]
    assert "interrupted" in st["error"]


# ---------------------------------------------------------------- dirty MySQL/MariaDB


def test_mariadb_dirty_refused_then_repaired_and_stamped(make_db: MakeDb, tmp_path: Path) -> None:
    url = make_db("mysql")
    p = make_project(
        tmp_path / "p",
        {
            "app": [
                Rev(up=["CREATE TABLE t1 (id int)"], down=["DROP TABLE t1"]),
                Rev(up=["CREATE TABLE t2 (id int)", "CREATE TABLE t1 (id int)"]),
            ]
        },
        {"app": url},
    )
    r = p.orch("upgrade", "app")
    assert r.exit_code == 1
    assert "failed" in r.stdout and rev_id("app", 2) in r.stdout and "dirty" in r.stdout
    st = state_of(p, "app")
    assert st["state"] == "dirty" and rev_id("app", 2) in st["error"]
    assert st["current"] == [rev_id("app", 1)]
    human = p.orch("status")
    assert "dirty" in human.stdout and rev_id("app", 2) in human.stdout

    for args in (("upgrade", "app"), ("downgrade", "app@base")):
        r = p.orch(*args, "--json")
        assert r.exit_code == 1, args
        (app,) = r.json()["databases"]
        assert app["outcome"] == "refused" and app["dirty"] is True
        assert "orch stamp app@" in app["error"]
    assert version_of(url) == [rev_id("app", 1)]

    # the operator undoes the half-applied DDL, fixes the revision, stamps, upgrades
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(text("DROP TABLE t2"))
    eng.dispose()
    rev2 = p.root / "migrations" / "app" / f"{rev_id('app', 2)}.py"
    # same length, within the same second: a stale .pyc must not run the old code
    rev2.write_text(rev2.read_text().replace("TABLE t1 (id int)", "TABLE t3 (id int)"))
    r = p.orch("stamp", f"app@{rev_id('app', 1)}", "--json")
    assert r.exit_code == 0, r.stdout
    assert r.json()["databases"][0]["outcome"] == "done"  # it cleared the dirty marker
    assert state_of(p, "app")["state"] == "behind"
    r = p.orch("upgrade", "app")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert version_of(url) == [rev_id("app", 2)]
    assert {"t1", "t2", "t3"} <= table_names(url)
    assert state_of(p, "app")["state"] == "up_to_date"
    outcomes = [(x["direction"], x["revision"], x["outcome"]) for x in log_rows(url)]
    assert outcomes == [
        ("upgrade", rev_id("app", 1), "ok"),
        ("upgrade", rev_id("app", 2), "failed"),
        ("stamp", rev_id("app", 1), "ok"),
        ("upgrade", rev_id("app", 2), "ok"),
    ]


def test_dirty_refusal_mid_fleet_is_exit_1_and_others_run(make_db: MakeDb, tmp_path: Path) -> None:
    a, b = make_db("mysql"), make_db("mysql")
    p = make_project(
        tmp_path / "p",
        {
            "bad": [Rev(up=["CREATE TABLE t (id int)", "CREATE TABLE t (id int)"])],
            "good": [Rev(up=["CREATE TABLE t (id int)"]), Rev(up=["CREATE TABLE u (id int)"])],
        },
        {"bad": a, "good": b},
    )
    assert p.orch("upgrade", "bad").exit_code == 1
    doc = p.orch("upgrade", "--all", "--json").json()
    assert doc["exit_code"] == 1
    assert {d["name"]: d["outcome"] for d in doc["databases"]} == {
        "bad": "refused",
        "good": "done",
    }
