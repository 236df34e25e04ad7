"""Registry checks that need to know the drivers and what a URL points at.

orch can only migrate through drivers it can lock with and time out
(psycopg 3 / psycopg2 / asyncpg for PostgreSQL, PyMySQL / MySQLdb / aiomysql /
asyncmy for MySQL/MariaDB, sqlite3 / aiosqlite; the async ones are tested in
test_async_drivers.py); every other URL names its fix.  Two entries of one environment on
one version table would share one history: refused before anything runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project
from test_registry import load, reasons

PG = "postgresql+psycopg"
APP = f"{PG}://a@h/app"
IN_META = "version_table_schema: meta"


def _one(tmp_path: Path, url: str) -> str | None:
    text = f"""
        databases: {{core: {{}}}}
        environments: {{dev: {{urls: {{core: "{url}"}}}}}}
        """
    found = reasons(tmp_path, text) if _has_problem(tmp_path, text) else {}
    return found.get("environments.dev.urls.core")


def _has_problem(tmp_path: Path, text: str) -> bool:
    from orch.errors import RegistryError

    try:
        load(tmp_path, text)
    except RegistryError:
        return True
    return False


def test_supported_urls_pass(tmp_path: Path) -> None:
    for url in (
        "sqlite:///var/core.db",
        "sqlite+pysqlite:///var/core.db",
        "postgresql+psycopg://u:pw@db.example:5432/core",
        "mysql+pymysql://u:pw@db.example/core",
        "mariadb+pymysql://u@db.example:3307/core?charset=utf8mb4",
    ):
        assert _one(tmp_path, url) is None, url


@pytest.mark.parametrize(
    ("url", "module", "fix"),
    [
        ("mysql://u:pw@h/db", "MySQLdb", "mysql+pymysql://"),
        ("mysql+mysqldb://u:pw@h/db", "MySQLdb", "mysql+pymysql://"),
        ("mariadb://u:pw@h/db", "MySQLdb", "mariadb+pymysql://"),
        ("postgresql://u:pw@h/db", "psycopg2", "postgresql+psycopg://"),
        ("postgresql+psycopg2://u:pw@h/db", "psycopg2", "postgresql+psycopg://"),
    ],
)
def test_default_drivers_that_are_not_installed_name_the_fix(
    tmp_path: Path, url: str, module: str, fix: str
) -> None:
    got = _one(tmp_path, url)
    if importlib.util.find_spec(module) is not None:
        assert got is None  # installed: a usable, supported driver
    else:
        assert got is not None
        assert f"needs driver {module}, which is not installed; use {fix} instead" in got
        assert "pw" not in got.replace("pymysql", "").replace("psycopg", "")


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://"),
        ("postgresql+psycopg_async://u@h/db", "postgresql+psycopg://"),
        ("postgresql+pg8000://u@h/db", "postgresql+psycopg://"),
        ("mysql+mysqlconnector://u@h/db", "mysql+pymysql://"),
        ("sqlite+pysqlcipher:///x.db", "sqlite://"),
    ],
)
def test_unsupported_drivers_name_the_supported_one(tmp_path: Path, url: str, fix: str) -> None:
    got = _one(tmp_path, url)
    assert got is not None and f"use {fix} instead" in got, got


def test_unknown_databases_and_bad_urls(tmp_path: Path) -> None:
    got = _one(tmp_path, "oracle+oracledb://u:secretpw@h/db")
    assert got is not None and "unsupported database URL scheme 'oracle+oracledb'" in got
    got = _one(tmp_path, "just-a-path.db")
    assert got is not None and got.startswith("not a database URL")
    got = _one(tmp_path, "postgresql+psycopg://u:secretpw@h:54x2/db")
    assert got is not None and "port '54x2' is not a number" in got
    assert "secretpw" not in got


def test_every_bad_url_is_reported_at_once(tmp_path: Path) -> None:
    got = reasons(
        tmp_path,
        """
        databases: {core: {}, analytics: {}}
        environments:
          dev: {urls: {core: "mysql://u@h/a", analytics: "postgresql://u@h/b"}}
          staging: {urls: {core: "postgres://u@h/c", analytics: "sqlite:///ok.db"}}
        """,
    )
    assert set(got) >= {
        "environments.staging.urls.core",
    }
    if importlib.util.find_spec("MySQLdb") is None:
        assert "environments.dev.urls.core" in got
    if importlib.util.find_spec("psycopg2") is None:
        assert "environments.dev.urls.analytics" in got


# ---------------------------------------------------------------- same database


@pytest.mark.parametrize(
    ("core", "analytics", "extra"),
    [
        # loopback aliases and the default port
        ("postgresql+psycopg://a@localhost/app", f"{PG}://b:pw@127.0.0.1:5432/app", ""),
        ("mysql+pymysql://a@127.0.0.1/app", "mariadb+pymysql://b@localhost:3306/app", ""),
        # PostgreSQL's default schema is public
        (
            "postgresql+psycopg://a@h/app",
            "postgresql+psycopg://a@h/app",
            "analytics: {version_table_schema: public}",
        ),
        # on MySQL a schema is a database: both version tables end up in `meta`
        (
            "mysql+pymysql://a@h/one",
            "mysql+pymysql://a@h/two",
            "core: {version_table_schema: meta}\n  analytics: {version_table_schema: meta}",
        ),
        ("mysql+pymysql://a@h/meta", "mysql+pymysql://a@h/two", f"analytics: {{{IN_META}}}"),
    ],
)
def test_two_entries_on_one_version_table(
    tmp_path: Path, core: str, analytics: str, extra: str
) -> None:
    dbs = "databases:\n  " + (extra if extra else "core: {}\n  analytics: {}")
    if "core:" not in dbs:
        dbs += "\n  core: {}"
    if "analytics:" not in dbs:
        dbs += "\n  analytics: {}"
    text = dbs + f'\nenvironments:\n  dev: {{urls: {{core: "{core}", analytics: "{analytics}"}}}}\n'
    got = reasons(tmp_path, text)
    assert (
        "points at the same database and version table as 'core'"
        in (got["environments.dev.urls.analytics"])
    )
    assert ":pw@" not in got["environments.dev.urls.analytics"]


@pytest.mark.parametrize(
    ("core", "analytics", "extra"),
    [
        ("postgresql+psycopg://a@h/app", "postgresql+psycopg://a@h:5433/app", ""),
        ("postgresql+psycopg://a@h/app", "postgresql+psycopg://a@other/app", ""),
        (APP, APP, "analytics: {version_table: analytics_version}"),
        (APP, APP, f"analytics: {{{IN_META}}}"),
        ("mysql+pymysql://a@h/one", "mysql+pymysql://a@h/two", ""),
    ],
)
def test_different_version_tables_are_fine(
    tmp_path: Path, core: str, analytics: str, extra: str
) -> None:
    dbs = "databases:\n  core: {}\n  " + (extra if extra else "analytics: {}")
    text = dbs + f'\nenvironments:\n  dev: {{urls: {{core: "{core}", analytics: "{analytics}"}}}}\n'
    assert set(load(tmp_path, text).databases) == {"core", "analytics"}


def test_duplicate_from_variables_only_when_that_environment_is_used(project: Project) -> None:
    p = project
    data = p.registry()
    data["environments"]["staging"]["urls"] = {
        "core": "${ORCH_T_CORE}",
        "analytics": "${ORCH_T_CORE}",
    }
    p.write_registry(data)
    same = {"ORCH_T_CORE": "postgresql+psycopg://app:topsecret1@127.0.0.1:1/app"}
    assert p.orch("status", env=same).exit_code == 0  # dev is fine
    r = p.orch("status", "--env", "staging", env=same)
    assert r.exit_code == 2
    assert "environments.staging.urls.analytics" in r.stderr
    assert "same database and version table as 'core'" in r.stderr
    assert "topsecret1" not in r.stdout + r.stderr


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_two_orch_databases_in_one_server_database(
    project: Project, make_db: Callable[..., str], kind: str
) -> None:
    """Distinct version tables in one server database: both migrate, neither blocks the other."""
    p = project
    url = make_db(kind)
    p.set_urls("dev", {"core": url, "analytics": url})
    data = p.registry()
    data["databases"]["analytics"]["version_table"] = "analytics_version"
    p.write_registry(data)
    r = p.orch("upgrade", "--all", "--jobs", "2")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert p.versions("core") == ["bd61b77cf8aa"]
    assert p.versions("core", table="analytics_version") == ["ce37b359c1da"]
    assert {"users", "events", "daily_rollups"} <= p.tables("core")
    states = {d["name"]: d["state"] for d in p.orch("status", "--json").json()["databases"]}
    assert states == {"core": "up_to_date", "analytics": "up_to_date"}
