"""Databases an environment leaves out: ``urls: {name: null}``.

Some databases exist only in some environments (an analytics database only
prod has, one history per backend).  ``null`` says so: every command of that
environment skips the database, a dependency on it counts as satisfied, and
naming it is a usage error (exit 2) that says it is not part of the
environment.  A database simply missing from ``urls`` stays an error, so a
typo can never make prod skip a database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project
from orch.config.registry import parse_registry
from orch.errors import RegistryError, UsageError
from orch.planning.plan import levels
from test_commands import ANALYTICS, CORE

NOT_PART = "database 'analytics' is not part of environment 'dev'"


def leave_out(p: Project, env: str, db: str, other_url: str | None = None) -> None:
    """Make *db* not part of *env* (its URL null); *other_url* for the other database."""
    data = p.registry()
    urls = data["environments"][env]["urls"]
    urls[db] = None
    if other_url is not None:
        other = "core" if db == "analytics" else "analytics"
        urls[other] = other_url
    p.write_registry(data)


def add_env(p: Project, name: str, urls: dict[str, str | None]) -> None:
    data = p.registry()
    data["environments"][name] = {"urls": urls}
    p.write_registry(data)


# ---------------------------------------------------------------- the registry


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("spelling", ["null", "~", "Null", "NULL"])
def test_spelled_null_leaves_the_database_out(tmp_path: Path, spelling: str) -> None:
    path = _write(
        tmp_path,
        "databases: {core: {}, analytics: {}}\n"
        "environments:\n"
        "  dev:\n"
        "    urls:\n"
        "      core: sqlite:///core.db\n"
        f"      analytics: {spelling}\n",
    )
    reg = parse_registry(path)
    assert reg.environments["dev"].absent == frozenset({"analytics"})
    assert "analytics" not in reg.environments["dev"].urls
    assert [t.name for t in reg.targets("dev")] == ["core"]
    with pytest.raises(UsageError, match=NOT_PART):
        reg.target("dev", "analytics")
    with pytest.raises(UsageError, match=NOT_PART):
        reg.in_environment("dev").database("analytics")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "no URL after the key: give analytics's URL, or write null"),
        ('""', "must be a URL string, not empty (write null if analytics is not part"),
        ("'  '", "must be a URL string, not empty"),
        ("[a]", "must be a URL string"),
    ],
)
def test_empty_or_wrong_url_is_still_an_error(tmp_path: Path, value: str, reason: str) -> None:
    """Only a spelled null leaves a database out: an empty value is a forgotten URL."""
    path = _write(
        tmp_path,
        "databases: {core: {}, analytics: {}}\n"
        "environments:\n"
        "  dev:\n"
        "    urls:\n"
        "      core: sqlite:///core.db\n"
        f"      analytics: {value}\n",
    )
    with pytest.raises(RegistryError) as info:
        parse_registry(path)
    got = {p.key: p.reason for p in info.value.problems}
    assert reason in got["environments.dev.urls.analytics"], got


def test_empty_value_in_flow_style_is_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "databases: {core: {}, analytics: {}}\n"
        "environments: {dev: {urls: {core: 'sqlite:///c.db', analytics: }}}\n",
    )
    with pytest.raises(RegistryError, match="no URL after the key"):
        parse_registry(path)
    path.write_text(path.read_text().replace("analytics: }", "analytics: null}"))
    assert parse_registry(path).environments["dev"].absent == {"analytics"}


def test_null_for_an_unknown_database_is_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "databases: {core: {}}\nenvironments: {dev: {urls: {core: 'sqlite:///c.db', "
        "analytic: null}}}\n",
    )
    with pytest.raises(RegistryError, match=r"urls\.analytic: unknown database"):
        parse_registry(path)


def test_a_dependency_left_out_keeps_the_order_across_it(tmp_path: Path) -> None:
    """a <- b <- c with b left out: c no longer waits for b, but still runs after a."""
    path = _write(
        tmp_path,
        "databases:\n"
        "  a: {}\n"
        "  b: {depends_on: [a]}\n"
        "  c: {depends_on: [b]}\n"
        "environments:\n"
        "  dev: {urls: {a: 'sqlite:///a.db', b: null, c: 'sqlite:///c.db'}}\n"
        "  prod: {urls: {a: 'sqlite:///pa.db', b: 'sqlite:///pb.db', c: 'sqlite:///pc.db'}}\n",
    )
    reg = parse_registry(path)
    dev = reg.in_environment("dev")
    assert list(dev.databases) == ["a", "c"]
    assert dev.databases["c"].depends_on == ("a",)
    assert dev.dependencies("c") == ["a"]
    assert dev.dependents("a") == ["c"]
    assert levels(dev, ["a", "c"]) == [["a"], ["c"]]
    assert reg.in_environment("prod") is reg  # nothing left out: the registry itself
    assert reg.databases["c"].depends_on == ("b",)  # the registry is unchanged


# ---------------------------------------------------------------- commands


def test_upgrade_all_and_status_work_on_the_rest(
    backend: str, project: Project, make_db: Callable[..., str]
) -> None:
    """The check of the issue: with analytics null in dev, --all and status do core only."""
    p = project
    core_url = make_db(backend)
    data = p.registry()
    data["environments"]["dev"]["urls"] = {"core": core_url, "analytics": None}
    p.write_registry(data)

    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = r.json()
    assert [(d["name"], d["outcome"]) for d in doc["databases"]] == [("core", "done")]
    assert p.versions("core") == [CORE[-1]]

    r = p.orch("status", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert [(d["name"], d["state"]) for d in doc["databases"]] == [("core", "up_to_date")]
    assert doc["absent"] == ["analytics"]
    assert p.orch("status", "--check").exit_code == 0

    r = p.orch("status")
    assert r.exit_code == 0
    assert "analytics" not in r.stdout.split("not part of")[0]
    assert "not part of dev (URL null): analytics" in r.stdout

    r = p.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0
    assert [(d["name"], d["outcome"]) for d in r.json()["databases"]] == [("core", "unchanged")]
    # nothing anywhere was created for analytics
    assert not (p.root / "var" / "dev" / "analytics.db").exists()


def test_a_missing_entry_is_still_an_error(project: Project) -> None:
    """No entry at all (a typo, a forgotten line) is not 'left out': upgrade --all exits 2."""
    p = project
    data = p.registry()
    del data["environments"]["dev"]["urls"]["analytics"]
    p.write_registry(data)
    r = p.orch("upgrade", "--all")
    assert r.exit_code == 2
    assert "has no URL for it" in r.stderr
    assert "environments.dev.urls.analytics: null" in r.stderr  # the way to say it on purpose
    assert p.versions("core") == []
    st = p.orch("status", "--json").json()
    assert {d["name"]: d["state"] for d in st["databases"]}["analytics"] == "unconfigured"
    assert st["absent"] == []


def test_a_dependency_left_out_counts_as_satisfied(project: Project) -> None:
    """analytics depends on core; an environment without core upgrades analytics alone."""
    p = project
    add_env(p, "edge", {"core": None, "analytics": "sqlite:///var/edge/analytics.db"})

    r = p.orch("--env", "edge", "plan", "analytics", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert [s["name"] for s in r.json()["steps"]] == ["analytics"]

    r = p.orch("--env", "edge", "upgrade", "analytics", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert [(d["name"], d["outcome"]) for d in r.json()["databases"]] == [("analytics", "done")]
    assert p.versions("analytics", "edge") == [ANALYTICS[-1]]

    # in dev, where core is part of it and behind, the same command still refuses
    r = p.orch("upgrade", "analytics")
    assert r.exit_code == 2
    assert "dependency behind" in r.stderr

    # downgrading core where its dependent is left out: nothing blocks it
    leave_out(p, "dev", "analytics")
    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("downgrade", "core@base", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert p.versions("core") == []


@pytest.mark.parametrize(
    "args",
    [
        ["upgrade", "analytics"],
        ["upgrade", "core", "analytics@+1"],
        ["upgrade", "analytics", "--sql"],
        ["plan", "analytics"],
        ["status", "analytics"],
        ["stamp", "analytics@head"],
        ["downgrade", "analytics@-1"],
        ["downgrade", "analytics@base", "--sql"],
        ["check", "analytics"],
        ["log", "analytics"],
        ["revision", "analytics", "-m", "x", "--autogenerate"],
    ],
)
def test_naming_a_left_out_database_exits_2(project: Project, args: list[str]) -> None:
    p = project
    leave_out(p, "dev", "analytics")
    before = sorted((p.root / "migrations" / "analytics").iterdir())
    r = p.orch(*args)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert NOT_PART in r.stderr
    assert r.stdout == ""
    j = p.orch(*args, "--json")
    assert j.exit_code == 2
    assert j.json()["exit_code"] == 2 and NOT_PART in j.json()["error"]
    # nothing was touched: no database file, no revision file
    assert not (p.root / "var" / "dev").exists()
    assert sorted((p.root / "migrations" / "analytics").iterdir()) == before


def test_read_commands_skip_it(project: Project) -> None:
    """plan, --sql, check and log of the environment cover only its own databases."""
    p = project
    leave_out(p, "dev", "analytics")

    r = p.orch("plan", "--json")
    assert r.exit_code == 0, r.stderr
    assert [s["name"] for s in r.json()["steps"]] == ["core"]

    r = p.orch("upgrade", "--all", "--sql", "--json")
    assert r.exit_code == 0, r.stderr
    assert [s["name"] for s in r.json()["databases"]] == ["core"]
    assert not (p.root / "var" / "dev").exists()  # read-only: no SQLite file

    assert p.orch("upgrade", "--all").exit_code == 0
    r = p.orch("check", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert [d["name"] for d in r.json()["databases"]] == ["core"]

    r = p.orch("log", "--json")
    assert r.exit_code == 0, r.stderr
    assert {e["database"] for e in r.json()["entries"]} == {"core"}
    assert r.json()["unreadable"] == {}


def test_status_all_envs_shows_absent_cells(project: Project) -> None:
    p = project
    leave_out(p, "dev", "analytics")
    add_env(p, "edge", {"core": None, "analytics": "sqlite:///var/edge/analytics.db"})
    data = p.registry()
    for env in ("staging", "prod"):
        del data["environments"][env]
    p.write_registry(data)

    r = p.orch("status", "--all-envs")
    assert r.exit_code == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()[1:3]}
    assert rows == {"core": ["behind", "(4)", "absent"], "analytics": ["absent", "behind", "(4)"]}

    r = p.orch("status", "--all-envs", "--json")
    assert r.exit_code == 0
    envs = {e["environment"]: e for e in r.json()["environments"]}
    assert [d["name"] for d in envs["dev"]["databases"]] == ["core"]
    assert envs["dev"]["absent"] == ["analytics"]
    assert [d["name"] for d in envs["edge"]["databases"]] == ["analytics"]
    assert envs["edge"]["absent"] == ["core"]
    # naming a database is fine here: it is part of some environment
    r = p.orch("status", "--all-envs", "analytics", "--json")
    assert r.exit_code == 0
    envs = {e["environment"]: e for e in r.json()["environments"]}
    assert envs["dev"]["databases"] == [] and envs["dev"]["absent"] == ["analytics"]


def test_history_lists_the_files_and_says_it_is_not_part(project: Project) -> None:
    """history reads files: it lists them, unmarked, and says why (exit 0)."""
    p = project
    leave_out(p, "dev", "analytics")
    r = p.orch("history", "analytics", "--json")
    assert r.exit_code == 0, r.stderr
    doc: dict[str, Any] = r.json()
    assert doc["state"] == "absent" and NOT_PART in doc["error"]
    assert doc["current"] is None
    assert [e["revision"] for e in doc["revisions"]] == ANALYTICS[::-1]
    assert {e["applied"] for e in doc["revisions"]} == {None}

    r = p.orch("history", "analytics")
    assert r.exit_code == 0
    assert "analytics (dev): current none (not part of dev)" in r.stdout
    assert NOT_PART in r.stderr


def test_graph_shows_where_a_database_is_left_out(project: Project) -> None:
    p = project
    r = p.orch("graph")
    assert "NOT IN" not in r.stdout  # no environment leaves anything out
    leave_out(p, "dev", "analytics")
    r = p.orch("graph")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["LEVEL", "DATABASE", "DEPENDS", "ON", "DEPENDENTS", "NOT", "IN"]
    assert lines[2].split() == ["1", "analytics", "core", "-", "dev"]
    doc = p.orch("graph", "--json").json()
    assert {d["name"]: d["absent_from"] for d in doc["databases"]} == {
        "core": [],
        "analytics": ["dev"],
    }


def test_plain_revision_of_a_left_out_database_still_works(project: Project) -> None:
    """Writing a revision file needs no database: the environment does not matter."""
    p = project
    leave_out(p, "dev", "analytics")
    r = p.orch("revision", "analytics", "-m", "add kind")
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).parent == p.root / "migrations" / "analytics"


def test_registry_file_round_trip_keeps_null(project: Project) -> None:
    """What the tests write is what a user writes: a YAML null, not an empty string."""
    leave_out(project, "dev", "analytics")
    text = project.registry_path.read_text()
    assert "analytics: null" in text
    assert yaml.safe_load(text)["environments"]["dev"]["urls"]["analytics"] is None
