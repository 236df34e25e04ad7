"""``orch log``: the audit trail across an environment's databases (read-only)."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from pathlib import Path

from conftest import Project
from minproj import Rev, log_rows, make_project, rev_id, table_names

MakeDb = Callable[..., str]


def _two_dbs(tmp_path: Path, urls: dict[str, str]) -> Project:
    return make_project(
        tmp_path / "p",
        {
            "one": [Rev(up=["CREATE TABLE a (id int)"]), Rev(up=["CREATE TABLE b (id int)"])],
            "two": [Rev(up=["CREATE TABLE a (id int)"]), Rev(up=["SELECT * FROM nowhere"])],
        },
        urls,
    )


def test_log_lists_applied_and_failed_steps_newest_first(
    backend: str, make_db: MakeDb, tmp_path: Path
) -> None:
    urls = {"one": make_db(backend), "two": make_db(backend)}
    p = _two_dbs(tmp_path, urls)
    assert p.orch("upgrade", "--all").exit_code == 1
    r = p.orch("log", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = r.json()
    assert doc["schema"] == 1 and doc["environment"] == "dev" and doc["unreadable"] == {}
    entries = doc["entries"]
    seen = {(e["database"], e["revision"], e["outcome"]) for e in entries}
    assert seen == {
        ("one", rev_id("one", 1), "ok"),
        ("one", rev_id("one", 2), "ok"),
        ("two", rev_id("two", 1), "ok"),
        ("two", rev_id("two", 2), "failed"),
    }
    started = [e["started_at"] for e in entries]
    assert started == sorted(started, reverse=True)
    failed = next(e for e in entries if e["outcome"] == "failed")
    assert "nowhere" in failed["error"]
    assert failed["direction"] == "upgrade" and failed["finished_at"] is not None
    for e in entries:
        assert e["os_user"] and e["host"] == socket.gethostname()
        assert e["orch_version"] and len(e["run_id"]) == 36 and e["duration_ms"] >= 0
    assert len({e["run_id"] for e in entries}) == 1  # one run, one id
    # filters and limit
    only = p.orch("log", "two", "--json").json()["entries"]
    assert {e["database"] for e in only} == {"two"} and len(only) == 2
    assert len(p.orch("log", "--limit", "1", "--json").json()["entries"]) == 1
    human = p.orch("log")
    assert human.exit_code == 0
    assert "failed" in human.stdout and rev_id("two", 2) in human.stdout
    assert getpass.getuser() in human.stdout or "@" in human.stdout


def test_log_rows_carry_who_and_what(make_db: MakeDb, tmp_path: Path) -> None:
    url = make_db("postgresql")
    p = make_project(
        tmp_path / "p",
        {"app": [Rev(up=["CREATE TABLE a (id int)"], down=["DROP TABLE a"])]},
        {"app": url},
    )
    assert p.orch("upgrade", "app").exit_code == 0
    assert p.orch("downgrade", "app@base").exit_code == 0
    assert p.orch("stamp", f"app@{rev_id('app', 1)}").exit_code == 0
    rows = log_rows(url)
    assert [(r["direction"], r["revision"], r["outcome"]) for r in rows] == [
        ("upgrade", rev_id("app", 1), "ok"),
        ("downgrade", rev_id("app", 1), "ok"),
        ("stamp", rev_id("app", 1), "ok"),
    ]
    assert rows[2]["detail"] == "from base"
    first = rows[0]
    assert first["db"] == "app" and first["env"] == "dev"
    assert first["started_at"] <= first["finished_at"]
    assert first["git_commit"] is None  # tmp_path is not a git checkout


def test_log_is_read_only(make_db: MakeDb, tmp_path: Path) -> None:
    """No SQLite file created, no table created on a server database."""
    pg = make_db("postgresql")
    lite = tmp_path / "lite.db"
    p = make_project(
        tmp_path / "p",
        {"lite": [Rev(up=["CREATE TABLE a (id int)"])], "pg": [Rev(up=["SELECT 1"])]},
        {"lite": f"sqlite:///{lite}", "pg": pg},
    )
    r = p.orch("log", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.json()["entries"] == []
    assert not lite.exists()
    assert table_names(pg) == set()
    assert "no entries" in p.orch("log").stdout


def test_log_hides_passwords_and_reports_unreachable(make_db: MakeDb, tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    url = make_db("postgresql", password=secret)
    dead = "postgresql+psycopg://nobody:" + secret + "@127.0.0.1:1/none"
    p = make_project(
        tmp_path / "p",
        {"app": [Rev(up=["CREATE TABLE a (id int)"])], "gone": []},
        {"app": url, "gone": dead},
    )
    assert p.orch("upgrade", "app").exit_code == 0
    r = p.orch("log", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert list(doc["unreadable"]) == ["gone"] and doc["exit_code"] == 1
    assert [e["database"] for e in doc["entries"]] == ["app"]
    human = p.orch("log")
    assert human.exit_code == 1 and "gone" in human.stderr
    for text in (r.stdout, r.stderr, human.stdout, human.stderr, repr(log_rows(url))):
        assert secret not in text


def test_log_unknown_database_is_a_usage_error(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", {"app": []}, {"app": f"sqlite:///{tmp_path / 'x.db'}"})
    r = p.orch("log", "nope")
    assert r.exit_code == 2 and "nope" in r.stderr


def test_log_rows_carry_the_project_git_commit(tmp_path: Path) -> None:
    import subprocess

    url = f"sqlite:///{tmp_path / 'app.db'}"
    p = make_project(tmp_path / "p", {"app": [Rev(up=["CREATE TABLE a (id int)"])]}, {"app": url})
    git = ["git", "-C", str(p.root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "project"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert p.orch("upgrade", "app").exit_code == 0
    (entry,) = p.orch("log", "--json").json()["entries"]
    assert entry["git_commit"] == head
