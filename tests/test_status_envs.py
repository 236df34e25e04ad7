"""``orch status --all-envs``: one view of every environment, on real servers.

The matrix covers an environment on PostgreSQL, one on MariaDB (both with
real logins that have passwords), one whose hosts refuse connections, one
whose "server" accepts TCP connections and never answers, and one whose URL
variables are not set.  Each cell must say what is true of it, promptly, and
no password may show anywhere.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import Project, closed_port, copy_project
from test_commands import ANALYTICS, CORE


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word.

    The kernel completes the handshake from the listen backlog, so drivers get
    a connection and then wait for a greeting that never comes: the case a
    connect timeout on the TCP connect alone does not cover.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _secret() -> str:
    return "pw" + uuid.uuid4().hex[:16]


@pytest.fixture(scope="module")
def fleet_envs(
    make_module_db: Callable[..., str],
    silent_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], list[str]]:
    """Five environments (PostgreSQL and MariaDB ones migrated to head) and their passwords.

    Built once per module: the tests only read these databases.
    """
    make_db = make_module_db
    secrets = [_secret() for _ in range(6)]
    closed = closed_port()
    envs: dict[str, Any] = {
        "pg": {
            "urls": {
                "core": make_db("postgresql", password=secrets[0]),
                "analytics": make_db("postgresql", password=secrets[1]),
            }
        },
        "maria": {
            "urls": {
                "core": make_db("mysql", password=secrets[2]),
                "analytics": make_db("mysql", password=secrets[3]),
            }
        },
        "down": {
            "urls": {
                "core": f"postgresql+psycopg://app:{secrets[4]}@127.0.0.1:{closed}/core",
                "analytics": f"mysql+pymysql://app:{secrets[4]}@127.0.0.1:{closed}/analytics",
            }
        },
        "silent": {
            "urls": {
                "core": f"postgresql+psycopg://app:{secrets[5]}@127.0.0.1:{silent_port}/core",
                "analytics": f"mysql+pymysql://app@127.0.0.1:{silent_port}/an"
                f"?password={secrets[5]}",
            }
        },
        "prod": {
            "protected": True,
            "urls": {"core": "${ORCH_T_UNSET_CORE}", "analytics": "${ORCH_T_UNSET_AN}"},
        },
    }
    p = copy_project(tmp_path_factory.mktemp("fleet") / "proj")
    _write_envs(p, envs)
    for env in ("pg", "maria"):
        r = p.orch("upgrade", "--all", "--env", env)
        assert r.exit_code == 0, r.stdout + r.stderr
    return envs, secrets


def _write_envs(p: Project, envs: dict[str, Any]) -> None:
    data = p.registry()
    data["settings"]["connect_timeout"] = 1
    data["environments"] = {"dev": data["environments"]["dev"], **envs}
    p.write_registry(data)


@pytest.fixture
def fleet(
    project: Project, fleet_envs: tuple[dict[str, Any], list[str]]
) -> tuple[Project, list[str]]:
    """This test's copy of the project, pointing at the module's five environments."""
    envs, secrets = fleet_envs
    _write_envs(project, envs)
    return project, secrets


def _cells(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["environment"], d["name"]): d for e in doc["environments"] for d in e["databases"]}


def test_all_envs_json_matrix(fleet: tuple[Project, list[str]]) -> None:
    p, secrets = fleet
    # a subprocess: the real console script, and a hang guard (a greeting never comes)
    r = p.orch_proc("status", "--all-envs", "--json", timeout=60)
    assert r.returncode == 1, r.stderr  # cells could not be read
    for s in secrets:
        assert s not in r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1 and doc["exit_code"] == 1
    for where in ("down/core", "silent/analytics", "prod/core", "prod/analytics"):
        assert where in doc["error"]
    assert "pg/" not in doc["error"] and "maria/" not in doc["error"]
    assert [e["environment"] for e in doc["environments"]] == [
        "dev",
        "pg",
        "maria",
        "down",
        "silent",
        "prod",
    ]
    cells = _cells(doc)
    for env in ("pg", "maria"):
        assert cells[(env, "core")]["state"] == "up_to_date"
        assert cells[(env, "core")]["current"] == [CORE[-1]]
        assert cells[(env, "analytics")]["state"] == "up_to_date"
        assert cells[(env, "analytics")]["heads"] == [ANALYTICS[-1]]
        assert cells[(env, "core")]["error"] is None
        assert ":***@" in cells[(env, "core")]["url"]
    assert cells[("dev", "core")]["state"] == "behind"
    assert cells[("dev", "core")]["pending"] == len(CORE)
    for db in ("core", "analytics"):
        down = cells[("down", db)]
        assert down["state"] == "unreachable"
        assert down["current"] is None and down["pending"] is None
        assert "refused" in down["error"].lower()
        silent = cells[("silent", db)]
        assert silent["state"] == "unreachable"
        assert "time" in silent["error"].lower()  # "timeout expired" / "timed out"
    assert cells[("silent", "analytics")]["url"].endswith("?password=***")
    assert cells[("prod", "core")]["state"] == "unconfigured"
    assert "ORCH_T_UNSET_CORE" in cells[("prod", "core")]["error"]
    assert "ORCH_T_UNSET_AN" in cells[("prod", "analytics")]["error"]
    assert cells[("prod", "core")]["url"] is None


def test_all_envs_table_and_check(fleet: tuple[Project, list[str]]) -> None:
    p, secrets = fleet
    r = p.orch("status", "--all-envs", "--check")
    assert r.exit_code == 1
    for s in secrets:
        assert s not in r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DATABASE", "dev", "pg", "maria", "down", "silent", "prod"]
    assert lines[1].split() == [
        "core",
        "behind",
        "(4)",
        "up_to_date",
        "up_to_date",
        "unreachable",
        "unreachable",
        "unconfigured",
    ]
    why = r.stdout.split("WHY", 1)[1]
    assert "down/core" in why and "silent/analytics" in why
    assert "prod/core" in why and "ORCH_T_UNSET_CORE" in why
    doc = p.orch("status", "--all-envs", "--check", "--json")
    assert doc.exit_code == 1 and doc.json()["exit_code"] == 1


def test_all_envs_check_passes_when_every_cell_is_up_to_date(
    fleet: tuple[Project, list[str]],
) -> None:
    p, _ = fleet
    data = p.registry()
    data["environments"] = {k: data["environments"][k] for k in ("pg", "maria")}
    data["default_env"] = "pg"
    p.write_registry(data)
    r = p.orch("status", "--all-envs", "--check")
    assert r.exit_code == 0, r.stdout
    assert "WHY" not in r.stdout


def test_all_envs_one_bad_url_is_one_unconfigured_cell(fleet: tuple[Project, list[str]]) -> None:
    """An environment whose resolved URL is unusable does not take the matrix down."""
    p, _ = fleet
    data = p.registry()
    data["environments"]["prod"]["urls"]["core"] = "${ORCH_T_BAD_DRIVER}"
    p.write_registry(data)
    r = p.orch("status", "--all-envs", "--json", env={"ORCH_T_BAD_DRIVER": "mysql://u:pw@h/db"})
    assert r.exit_code == 1  # the unusable cell (and the other unreadable ones)
    cells = _cells(r.json())
    assert cells[("prod", "core")]["state"] == "unconfigured"
    assert "mysql+pymysql://" in cells[("prod", "core")]["error"]
    assert cells[("pg", "core")]["state"] == "up_to_date"
    # used as *the* environment, the same URL is a registry error: exit 2
    r = p.orch("status", "--env", "prod", env={"ORCH_T_BAD_DRIVER": "mysql://u:pw@h/db"})
    assert r.exit_code == 2
    assert "environments.prod.urls.core" in r.stderr


def test_status_of_one_environment_on_a_silent_host(fleet: tuple[Project, list[str]]) -> None:
    p, secrets = fleet
    r = p.orch_proc("status", "--env", "silent", timeout=60)
    assert r.returncode == 1
    assert r.stdout.count("unreachable") == 2
    assert secrets[5] not in r.stdout + r.stderr


def test_first_use_of_dialects_from_many_threads(project: Project) -> None:
    """A fresh process loading several dialects at once from status threads.

    SQLAlchemy imports dialects lazily; before orch preloaded them, two threads
    making the first MySQL and MariaDB engines raced and one cell said
    "cannot access submodule 'mysql' of module 'sqlalchemy.dialects'" instead
    of why the host was unreachable (most runs of this test).
    """
    p = project
    closed = closed_port()
    schemes = ["mysql+pymysql", "mariadb+pymysql", "postgresql+psycopg", "sqlite"]
    data = p.registry()
    data["environments"] = {
        f"e{i}": {
            "urls": {
                "core": f"{scheme}://u@127.0.0.1:{closed}/c{i}",
                "analytics": f"{schemes[(i + 1) % 3]}://u@127.0.0.1:{closed}/a{i}",
            }
        }
        for i, scheme in enumerate(schemes[:3])
    }
    data["default_env"] = "e0"
    p.write_registry(data)
    for _ in range(5):
        r = p.orch_proc("status", "--all-envs", "--json", timeout=60)
        assert r.returncode == 1, r.stderr  # every cell unreachable
        errors = [d["error"] for e in json.loads(r.stdout)["environments"] for d in e["databases"]]
        assert len(errors) == 6
        assert all("refused" in (e or "").lower() for e in errors), errors


# ---------------------------------------------------------------- status exit codes


def _add_env(p: Project, name: str, urls: dict[str, str]) -> None:
    data = p.registry()
    data["environments"][name] = {"urls": urls}
    p.write_registry(data)


def test_status_exits_1_when_every_url_comes_from_an_unset_variable(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI case: ``orch --env ci status`` where no variable is set must not pass."""
    for name in ("ORCH_T_CI_CORE", "ORCH_T_CI_AN"):
        monkeypatch.delenv(name, raising=False)
    _add_env(project, "ci", {"core": "${ORCH_T_CI_CORE}", "analytics": "${ORCH_T_CI_AN}"})
    r = project.orch("--env", "ci", "status")
    assert r.exit_code == 1, r
    assert r.stdout.count("unconfigured") == 2
    assert "ORCH_T_CI_CORE" in r.stdout and "ORCH_T_CI_AN" in r.stdout  # the cells say why
    assert r.stderr.startswith("orch: could not read core unconfigured")
    assert "ORCH_T_CI_CORE" in r.stderr
    r = project.orch("--env", "ci", "status", "--json")
    assert (r.exit_code, r.stderr) == (1, "")
    doc = r.json()
    assert doc["exit_code"] == 1
    assert "ORCH_T_CI_CORE" in doc["error"] and "ORCH_T_CI_AN" in doc["error"]
    assert [d["state"] for d in doc["databases"]] == ["unconfigured", "unconfigured"]
    assert "ORCH_T_CI_AN" in doc["databases"][1]["error"]
    assert project.orch("--env", "ci", "status", "--check").exit_code == 1
    # the same databases, once the variables are set: read, so exit 0 (behind is no failure)
    sqlite = {
        "ORCH_T_CI_CORE": f"sqlite:///{project.root}/ci_core.db",
        "ORCH_T_CI_AN": f"sqlite:///{project.root}/ci_an.db",
    }
    r = project.orch("--env", "ci", "status", "--json", env=sqlite)
    assert r.exit_code == 0, r
    assert "error" not in r.json() and "exit_code" not in r.json()
    r = project.orch("--env", "ci", "status", "--check", "--json", env=sqlite)
    assert r.exit_code == 1
    assert r.json()["error"] == "not up to date: core behind, analytics behind"


def test_status_exits_1_when_one_database_is_unreachable(project: Project) -> None:
    urls = project.registry()["environments"]["dev"]["urls"]
    port = closed_port()
    _add_env(
        project,
        "half",
        {**urls, "analytics": f"postgresql+psycopg://app:Pw-half-1@127.0.0.1:{port}/an"},
    )
    r = project.orch("--env", "half", "status", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert [d["state"] for d in doc["databases"]] == ["behind", "unreachable"]
    assert doc["exit_code"] == 1 and doc["error"].startswith("could not read analytics unreachable")
    assert "Pw-half-1" not in r.stdout + r.stderr
    r = project.orch("status", "--all-envs", "--json")  # staging and prod: variables unset
    assert r.exit_code == 1 and "half/analytics unreachable" in r.json()["error"]
    assert "dev/" not in r.json()["error"]
