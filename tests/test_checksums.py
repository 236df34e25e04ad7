"""History you can trust: each applied revision's file hash, ``edited``, ``accept``, and an
audit table with a version of its own, upgraded in place.

On real servers (SQLite, PostgreSQL, MariaDB): a revision file edited after it ran
shows in ``status`` (table and JSON); an unprotected run warns and goes on, a
protected one is refused until ``orch accept`` records the edit with who and
why; a revision applied by plain Alembic is adopted, never called edited; two
environments that ran different contents are named by ``status --all-envs``.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Project
from minproj import Rev, log_rows, make_project, rev_id, version_of
from orch.store.audit import TABLE_VERSION

MakeDb = Callable[..., str]
R1, R2 = rev_id("app", 1), rev_id("app", 2)


def _project(tmp_path: Path, url: str, **kw: Any) -> Project:
    return make_project(
        tmp_path / "p",
        {
            "app": [
                Rev(up=["CREATE TABLE a (id int)"], down=["DROP TABLE a"]),
                Rev(up=["CREATE TABLE b (id int)"], down=["DROP TABLE b"]),
            ]
        },
        {"app": url},
        **kw,
    )


def _edit(p: Project, rev: str, db: str = "app") -> None:
    """Change one character of an applied revision's file (its docstring)."""
    f = p.root / "migrations" / db / f"{rev}.py"
    text = f.read_text()
    assert " step " in text
    f.write_text(text.replace(" step ", " Step ", 1))


def _status(p: Project, *args: str) -> dict[str, Any]:
    r = p.orch("status", "--json", *args)
    assert r.exit_code == 0, r.stdout + r.stderr
    return {d["name"]: d for d in r.json()["databases"]}


def _protect(p: Project) -> None:
    data = p.registry()
    data["environments"]["dev"]["protected"] = True
    p.write_registry(data)


def test_an_edited_applied_revision_shows_in_status(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    p = _project(tmp_path, make_db(backend))
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    assert _status(p)["app"]["edited"] == []
    _edit(p, R2)  # not applied: an edit of a pending revision is no finding
    assert _status(p)["app"]["state"] == "behind"
    _edit(p, R1)
    app = _status(p)["app"]
    assert app["state"] == "edited" and app["edited"] == [R1]
    assert app["pending"] == 1 and app["current"] == [R1]
    r = p.orch("status")
    assert r.exit_code == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("app "))
    assert "edited" in line and R1 in line and f"orch accept app@{R1}" in line
    assert p.orch("status", "--check").exit_code == 1  # not up_to_date
    # status wrote nothing: no adopt row, no row at all
    url = p.url("app")
    assert [(r["direction"], r["revision"]) for r in log_rows(url)] == [("upgrade", R1)]


def test_unprotected_upgrade_warns_and_runs(make_db: MakeDb, tmp_path: Path) -> None:
    url = make_db("sqlite")
    p = _project(tmp_path, url)
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _edit(p, R1)
    r = p.orch("upgrade", "app", "--json")
    assert r.exit_code == 0, r.stderr
    assert "warning: app:" in r.stderr and R1 in r.stderr and "orch accept" in r.stderr
    assert r.json()["databases"][0]["applied"] == [R2]  # stdout: the result alone
    assert version_of(url) == [R2]
    assert _status(p)["app"]["edited"] == [R1]  # still edited: nobody accepted it


def test_protected_upgrade_is_refused_until_the_edit_is_accepted(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db(backend)
    p = _project(tmp_path, url)
    _protect(p)
    assert p.orch("upgrade", f"app@{R1}", "--yes").exit_code == 0
    _edit(p, R1)
    r = p.orch("upgrade", "app", "--yes")
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "refused" in r.stdout and R1 in r.stdout + r.stderr and "accept" in r.stdout
    assert version_of(url) == [R1]
    assert p.orch("downgrade", "app@base", "--yes").exit_code == 2
    assert version_of(url) == [R1]
    # the plan shown before a protected run says so before anyone types the name
    shown = p.orch("upgrade", "app")
    assert shown.exit_code == 2 and f"edited: app: revision {R1}" in shown.stderr
    # accept is protected like stamp: no terminal and no --yes, nothing recorded
    r = p.orch("accept", f"app@{R1}", "-m", "comment typo fixed after the fact")
    assert r.exit_code == 2 and "protected" in r.stderr and "--yes" in r.stderr
    assert _status(p)["app"]["state"] == "edited"
    r = p.orch("accept", f"app@{R1}", "-m", "", "--yes")
    assert r.exit_code == 2 and "reason" in r.stderr
    r = p.orch("accept", f"app@{R1}", "-m", "comment typo fixed after the fact", "--yes")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _status(p)["app"]["edited"] == [] and _status(p)["app"]["state"] == "behind"
    entries = p.orch("log", "--json").json()["entries"]
    accepted = [e for e in entries if e["direction"] == "accept"]
    assert len(accepted) == 1
    a = accepted[0]
    assert a["revision"] == R1 and a["outcome"] == "ok"
    assert a["detail"] == "comment typo fixed after the fact"
    assert a["os_user"] == getpass.getuser() and a["host"] == socket.gethostname()
    assert len(a["sha256"]) == 64
    human = p.orch("log").stdout
    assert "accept" in human and "comment typo fixed after the fact" in human
    # accepted: the protected run goes on; accepting again changes nothing
    assert p.orch("upgrade", "app", "--yes").exit_code == 0
    assert version_of(url) == [R2]
    again = p.orch("accept", f"app@{R1}", "-m", "again", "--yes", "--json")
    assert again.exit_code == 0 and again.json()["databases"][0]["outcome"] == "unchanged"
    # a revision that is not applied has no edit to accept
    assert p.orch("downgrade", f"app@{R1}", "--yes").exit_code == 0
    r = p.orch("accept", f"app@{R2}", "-m", "why", "--yes")
    assert r.exit_code == 2 and "not applied" in r.stdout + r.stderr


def test_a_revision_applied_by_plain_alembic_is_adopted_not_edited(
    backend_project: Project,
) -> None:
    from orch.config.revisions import load_graph

    p = backend_project
    graph = load_graph(p.root / "migrations" / "core", "core")
    first = graph.ordered(set(graph.revs))[0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "STAGING_"))}
    r = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", "-x", "db=core", "-x", "env=dev"]
        + ["upgrade", first],
        cwd=p.root,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    path = Path(graph.revs[first].path)
    path.write_text(path.read_text() + "\n# edited after plain alembic ran it\n")
    core = _status(p)["core"]
    assert core["state"] == "behind" and core["edited"] == []  # no hash known: not edited
    assert p.orch("upgrade", "core").exit_code == 0  # the next write adopts it
    adopted = [e for e in p.orch("log", "--json").json()["entries"] if e["direction"] == "adopt"]
    assert [e["revision"] for e in adopted] == [first]
    core = _status(p)["core"]
    assert core["state"] == "up_to_date" and core["edited"] == []
    path.write_text(path.read_text() + "# and again\n")
    assert _status(p)["core"]["edited"] == [first]  # from now on an edit shows


def test_all_envs_names_a_revision_that_ran_with_different_contents(
    make_db: MakeDb, tmp_path: Path
) -> None:
    p = _project(tmp_path, make_db("sqlite"))
    p.set_urls("staging", {"app": make_db("sqlite")})
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _edit(p, R1)
    assert p.orch("upgrade", f"app@{R1}", "--env", "staging").exit_code == 0
    r = p.orch("status", "--all-envs", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    (d,) = doc["differing"]
    assert d["database"] == "app" and d["revision"] == R1
    assert set(d["sha256"]) == {"dev", "staging"} and len(set(d["sha256"].values())) == 2
    states = {e["environment"]: e["databases"][0]["state"] for e in doc["environments"]}
    assert states == {"dev": "edited", "staging": "behind"}
    human = p.orch("status", "--all-envs").stdout
    assert "RAN WITH DIFFERENT CONTENTS" in human
    line = next(ln for ln in human.splitlines() if R1 in ln and "vs" in ln)
    assert "dev" in line and "staging" in line


# ---------------------------------------------------------------- the audit table's version

#: orch_log as orch wrote it before it recorded file hashes (table version 1)
_V1_COLUMNS = """
    id {pk},
    run_id VARCHAR(36) NOT NULL,
    db VARCHAR(64) NOT NULL,
    env VARCHAR(64) NOT NULL,
    revision VARCHAR(255),
    direction VARCHAR(16) NOT NULL,
    started_at {ts} NOT NULL,
    finished_at {ts},
    duration_ms INTEGER,
    outcome VARCHAR(16) NOT NULL,
    os_user VARCHAR(128) NOT NULL,
    host VARCHAR(255) NOT NULL,
    orch_version VARCHAR(32) NOT NULL,
    error TEXT,
    detail TEXT,
    git_commit VARCHAR(40)
"""
_PK = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "SERIAL PRIMARY KEY",
    "mysql": "INTEGER AUTO_INCREMENT PRIMARY KEY",
}
_TS = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITHOUT TIME ZONE", "mysql": "DATETIME"}


def _execute(url: str, *statements: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.begin() as c:
            for s in statements:
                c.execute(text(s))
    finally:
        eng.dispose()


def _columns(url: str, table: str = "orch_log") -> set[str]:
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as c:
            return {col["name"] for col in inspect(c).get_columns(table)}
    finally:
        eng.dispose()


def _versions(url: str) -> list[int]:
    """The audit table's shape version, as its version row says."""
    rows = log_rows(url, every=True)
    return [int(r["detail"]) for r in rows if r["direction"] == "table_version" and not r["db"]]


def _old_table(url: str, backend: str, rows: int = 3) -> None:
    """An orch_log of table version 1 with *rows* rows of an earlier orch (applied R1)."""
    create = f"CREATE TABLE orch_log ({_V1_COLUMNS.format(pk=_PK[backend], ts=_TS[backend])})"
    inserts = [
        "INSERT INTO orch_log (run_id, db, env, revision, direction, started_at, finished_at, "
        "duration_ms, outcome, os_user, host, orch_version, error, detail, git_commit) VALUES "
        f"('run-{i}', 'app', 'dev', '{R1 if i == 0 else 'other'}', 'upgrade', "
        "'2026-01-02 03:04:05', '2026-01-02 03:04:06', 1000, 'ok', 'alice', 'ops1', '0.1', "
        f"NULL, 'row {i}', NULL)"
        for i in range(rows)
    ]
    _execute(url, create, *inserts)


def test_an_older_audit_table_is_upgraded_in_place_keeping_every_row(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db(backend)
    p = _project(tmp_path, url)
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _execute(url, "DROP TABLE orch_log")
    _old_table(url, backend)
    before = log_rows(url)
    assert "sha256" not in before[0]
    # an older table: status and log read it as it is, and write nothing
    assert _status(p)["app"]["state"] == "behind"
    assert len(p.orch("log", "--json").json()["entries"]) == 3
    assert "sha256" not in _columns(url)
    # the next write upgrades it under the lock, rows kept, and adopts R1
    r = p.orch("upgrade", "app")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert {"sha256", "scope"} <= set(_columns(url))
    after = log_rows(url)
    for old, new in zip(before, after, strict=False):
        assert {k: v for k, v in new.items() if k not in ("sha256", "scope")} == old
        assert new["sha256"] is None and new["scope"] is None
    added = [(r["direction"], r["revision"]) for r in after[len(before) :]]
    assert added == [("adopt", R1), ("upgrade", R2)]
    assert all(r["sha256"] for r in after[len(before) :])
    assert json.loads(after[-1]["scope"]) == {"selectors": ["app"]}
    assert _versions(url) == [TABLE_VERSION]
    # upgrading again is a no-op
    assert p.orch("downgrade", f"app@{R1}").exit_code == 0
    assert _versions(url) == [TABLE_VERSION]


def test_a_newer_audit_table_refuses_writes_and_still_reads(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    url = make_db(backend)
    p = _project(tmp_path, url)
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _execute(
        url,
        "UPDATE orch_log SET detail = '99' WHERE direction = 'table_version'",
        "ALTER TABLE orch_log ADD COLUMN from_the_future VARCHAR(10)",
    )
    before = log_rows(url, every=True)
    for args in (["upgrade", "app"], ["stamp", "app@base"], ["accept", f"app@{R1}", "-m", "x"]):
        r = p.orch(*args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        said = r.stdout + r.stderr
        assert "version 99" in said and f"version {TABLE_VERSION}" in said
        assert "upgrade orch" in said
    assert version_of(url) == [R1] and log_rows(url, every=True) == before
    app = _status(p)["app"]
    assert app["state"] == "behind" and app["current"] == [R1]
    r = p.orch("log", "--json")
    assert r.exit_code == 0 and [e["revision"] for e in r.json()["entries"]] == [R1]


def test_a_new_audit_table_carries_its_version(make_db: MakeDb, tmp_path: Path) -> None:
    url = make_db("sqlite")
    p = _project(tmp_path, url)
    assert p.orch("upgrade", "app").exit_code == 0
    assert _versions(url) == [TABLE_VERSION] == [3]
    assert all(len(r["sha256"]) == 64 for r in log_rows(url))


def test_an_upgrade_of_the_table_that_died_half_way_is_finished(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """MySQL/MariaDB commit each DDL statement: a run killed after adding the column, before
    the version row, leaves a version 1 table with the column; the next run finishes it."""
    url = make_db(backend)
    p = _project(tmp_path, url)
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _execute(url, "DROP TABLE orch_log")
    _old_table(url, backend, rows=1)
    _execute(url, "ALTER TABLE orch_log ADD COLUMN sha256 VARCHAR(64)")
    assert _versions(url) == []  # version 1: no version row
    r = p.orch("upgrade", "app")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _versions(url) == [TABLE_VERSION]
    assert [(x["direction"], x["revision"]) for x in log_rows(url)] == [
        ("upgrade", R1),
        ("adopt", R1),
        ("upgrade", R2),
    ]


def test_a_version_2_table_gains_the_run_scope_keeping_its_rows(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    """Version 3 records what each run selected (``scope``, read by ``upgrade --retry``);
    a version 2 table (an orch before it) gets the column under the lock, rows kept."""
    url = make_db(backend)
    p = _project(tmp_path, url)
    assert p.orch("upgrade", f"app@{R1}").exit_code == 0
    _execute(
        url,
        "ALTER TABLE orch_log DROP COLUMN scope",
        "UPDATE orch_log SET detail = '2' WHERE direction = 'table_version'",
    )
    before = log_rows(url)
    assert "scope" not in before[0] and _versions(url) == [2]
    assert len(p.orch("log", "--json").json()["entries"]) == 1  # read as it is
    r = p.orch("upgrade", "app")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert _versions(url) == [3]
    after = log_rows(url)
    assert {k: v for k, v in after[0].items() if k != "scope"} == before[0]
    assert after[0]["scope"] is None and json.loads(after[1]["scope"]) == {"selectors": ["app"]}


def test_the_python_api_reads_edited_and_accepts(make_db: MakeDb, tmp_path: Path) -> None:
    import orch

    p = _project(tmp_path, make_db("sqlite"))
    _protect(p)
    project = orch.Project.load(p.registry_path)
    assert project.upgrade(["app"], yes=True).ok
    _edit(p, R2)
    app = project.status()["app"]
    assert app.state is orch.State.EDITED and app.edited == [R2]
    with pytest.raises(orch.RefusedError):  # protected: an approved plan or yes
        project.accept(f"app@{R2}", "reviewed")
    with pytest.raises(orch.UsageError):
        project.accept(f"app@{R2}", "  ", yes=True)
    plan = project.plan_accept(f"app@{R2}")
    result = project.accept(plan.approve(), "reviewed")
    assert result.ok and result["app"].outcome is orch.Outcome.DONE
    assert project.status()["app"].state is orch.State.UP_TO_DATE


def test_a_file_edited_between_two_runs_of_one_process_is_seen_by_the_second(
    make_db: MakeDb, tmp_path: Path
) -> None:
    """A run reads each version directory once (its databases share the graph and the file
    hashes); the next run in the same process reads the files again."""
    import orch

    url = make_db("sqlite")
    p = _project(tmp_path, url)
    _protect(p)
    project = orch.Project.load(p.registry_path)
    assert project.upgrade([f"app@{R1}"], yes=True).ok
    _edit(p, R1)
    result = project.upgrade(["app"], yes=True)
    assert result["app"].outcome is orch.Outcome.REFUSED, result["app"]
    assert "edited" in (result["app"].error or ""), result["app"].error
    assert version_of(url) == [R1]
