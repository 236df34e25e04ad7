"""The reference project end to end on SQLite: orch's commands and plain alembic side by side."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Project
from orch.config.revisions import load_graph


def alembic(
    project: Project, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Plain ``alembic`` as a user would run it in the project directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "STAGING_"))}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "alembic.ini", *args],
        cwd=project.root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def states(project: Project) -> dict[str, str]:
    r = project.orch("status", "--json")
    assert r.exit_code == 0, r.stderr
    return {d["name"]: d["state"] for d in r.json()["databases"]}


def head(project: Project, name: str) -> str:
    heads = load_graph(project.root / "migrations" / name, name).heads
    assert len(heads) == 1
    return heads[0]


def files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if "__pycache__" not in p.parts}


def test_upgrade_downgrade_status_and_plan(project: Project) -> None:
    r = project.orch("upgrade", "--all")
    assert r.exit_code == 0, r.stderr
    assert states(project) == {"core": "up_to_date", "analytics": "up_to_date"}
    assert (project.root / "var" / "dev" / "core.db").is_file()  # relative to the registry

    r = project.orch("downgrade", "analytics@base")
    assert r.exit_code == 0, r.stderr
    assert states(project) == {"core": "up_to_date", "analytics": "behind"}
    r = project.orch("status", "--check")
    assert r.exit_code == 1
    assert re.search(r"analytics\s+behind\s+base", r.stdout)

    r = project.orch("plan", "--all")
    assert r.exit_code == 0, r.stderr
    body = r.stdout.splitlines()[1:]
    assert len(body) == 1 and body[0].split()[1] == "analytics"
    assert head(project, "analytics") in body[0]

    r = project.orch("downgrade", "analytics")  # no target
    assert r.exit_code == 2
    assert states(project)["analytics"] == "behind"

    assert project.orch("upgrade", "--all").exit_code == 0
    r = project.orch("status", "--check")
    assert r.exit_code == 0, r.stdout
    r = project.orch("plan", "--all")
    assert r.stdout.strip() == "nothing to do: every database is at its head"


def test_upgrade_json_is_one_document(project: Project) -> None:
    r = project.orch("upgrade", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["schema"] == 1 and doc["command"] == "upgrade"
    assert [(d["name"], d["outcome"]) for d in doc["databases"]] == [
        ("core", "done"),
        ("analytics", "done"),
    ]


def test_read_only_commands_create_no_file(project: Project) -> None:
    before = files(project.root)
    for args in (
        ["status"],
        ["status", "--json"],
        ["status", "--check"],
        ["status", "--all-envs"],
        ["plan"],
        ["plan", "--json"],
        ["plan", "analytics", "--with-deps"],
    ):
        r = project.orch(*args)
        assert r.exit_code in (0, 1), (args, r.stderr)
    assert files(project.root) == before
    assert not (project.root / "var").exists()


def test_plain_alembic_heads_shows_one_labelled_head_per_database(project: Project) -> None:
    r = alembic(project, "heads")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(
        [
            f"{head(project, 'core')} (core) (head)",
            f"{head(project, 'analytics')} (analytics) (head)",
        ]
    )


def test_plain_alembic_upgrade_with_x_db_and_env(project: Project) -> None:
    r = alembic(project, "-x", "db=core", "-x", "env=dev", "upgrade", "core@head")
    assert r.returncode == 0, r.stderr
    assert states(project) == {"core": "up_to_date", "analytics": "behind"}
    assert not (project.root / "var" / "dev" / "analytics.db").exists()
    r = alembic(project, "-x", "db=core", "-x", "env=dev", "current")
    assert r.returncode == 0, r.stderr
    assert head(project, "core") in r.stdout


def test_plain_alembic_uses_orch_env_like_orch(project: Project) -> None:
    r = alembic(project, "-x", "db=core", "current", env={"ORCH_ENV": "staging"})
    assert r.returncode != 0
    assert "environment variable STAGING_CORE_URL is not set" in r.stdout + r.stderr


def test_plain_alembic_without_x_db_says_how_to_run_it(project: Project) -> None:
    r = alembic(project, "upgrade", "core@head")
    assert r.returncode != 0
    said = r.stdout + r.stderr  # Alembic prints its FAILED line on stdout
    assert "alembic -x db=NAME -x env=ENV upgrade NAME@head" in said
    assert "Traceback" not in said
    assert not (project.root / "var").exists()


def test_revision_for_a_new_database_starts_a_labelled_lineage(project: Project) -> None:
    data = project.registry()
    data["databases"]["newdb"] = {}
    data["environments"]["dev"]["urls"]["newdb"] = "sqlite:///var/dev/newdb.db"
    project.write_registry(data)
    assert not (project.root / "migrations" / "newdb").exists()

    r = project.orch("revision", "newdb", "-m", "first")
    assert r.exit_code == 0, r.stderr
    created = list((project.root / "migrations" / "newdb").glob("*.py"))
    assert len(created) == 1
    assert r.stdout.strip().endswith(created[0].name)
    graph = load_graph(project.root / "migrations" / "newdb", "newdb")
    (rev,) = graph.revs.values()
    assert rev.branch_labels == ("newdb",) and rev.down == ()

    heads = alembic(project, "heads")
    assert heads.returncode == 0, heads.stderr
    assert f"{rev.revision} (newdb) (head)" in heads.stdout.splitlines()
    # the next one follows it; --json output is one document (no Alembic chatter)
    r = project.orch("revision", "newdb", "-m", "second", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["created"] is True and doc["database"] == "newdb"
    assert load_graph(project.root / "migrations" / "newdb").heads == (doc["revision"],)
    # and orch itself migrates it with the others
    assert project.orch("upgrade", "--all").exit_code == 0
    assert states(project)["newdb"] == "up_to_date"
