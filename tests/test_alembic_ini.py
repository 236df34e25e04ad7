"""alembic.ini's version_locations kept in step with the registry (for plain alembic)."""

from __future__ import annotations

from conftest import Project
from orch.config.alembic_ini import add_location, configured_locations, disagreements
from orch.config.registry import load_registry


def _ini(p: Project) -> str:
    return (p.root / "alembic.ini").read_text()


def test_reference_project_agrees(project: Project) -> None:
    reg = load_registry(project.registry_path)
    assert disagreements(reg) == []
    assert configured_locations(reg) == [
        project.root / "migrations" / "core",
        project.root / "migrations" / "analytics",
    ]


def test_missing_and_extra_directories_are_named(project: Project) -> None:
    ini = project.root / "alembic.ini"
    ini.write_text(
        _ini(project).replace(
            "%(here)s/migrations/core:%(here)s/migrations/analytics",
            "%(here)s/migrations/core:%(here)s/migrations/old",
        )
    )
    problems = disagreements(load_registry(project.registry_path))
    assert len(problems) == 2
    assert "does not list migrations/analytics (database analytics)" in problems[0]
    assert "lists migrations/old, which no database of databases.yaml uses" in problems[1]


def test_add_location_edits_one_line_only(project: Project) -> None:
    reg = load_registry(project.registry_path)
    before = _ini(project)
    msg = add_location(reg, project.root / "migrations" / "billing")
    assert msg == "alembic.ini: added %(here)s/migrations/billing to version_locations"
    after = _ini(project)
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        (
            "version_locations = %(here)s/migrations/core:%(here)s/migrations/analytics",
            "version_locations = %(here)s/migrations/core:%(here)s/migrations/analytics"
            ":%(here)s/migrations/billing",
        )
    ]
    assert add_location(reg, project.root / "migrations" / "billing") is None  # idempotent


def test_add_location_without_a_version_locations_line(project: Project) -> None:
    ini = project.root / "alembic.ini"
    text = "\n".join(
        ln for ln in _ini(project).splitlines() if not ln.startswith("version_locations")
    )
    ini.write_text(text + "\n")
    reg = load_registry(project.registry_path)
    assert "no version_locations" in disagreements(reg)[0]
    msg = add_location(reg, project.root / "migrations" / "analytics")
    assert msg is not None and "set version_locations" in msg
    assert disagreements(load_registry(project.registry_path)) == []


def test_multiline_value_is_left_to_the_user(project: Project) -> None:
    ini = project.root / "alembic.ini"
    ini.write_text(
        _ini(project)
        .replace("path_separator = os", "path_separator = newline")
        .replace(
            "version_locations = %(here)s/migrations/core:%(here)s/migrations/analytics",
            "version_locations =\n    %(here)s/migrations/core\n    %(here)s/migrations/analytics",
        )
    )
    reg = load_registry(project.registry_path)
    assert disagreements(reg) == []
    before = _ini(project)
    msg = add_location(reg, project.root / "migrations" / "billing")
    assert msg is not None and "add %(here)s/migrations/billing to it yourself" in msg
    assert _ini(project) == before
