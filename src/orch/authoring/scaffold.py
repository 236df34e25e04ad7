"""``orch init``: the files of an orch project, into an empty directory or an existing app.

Writes alembic.ini, databases.yaml (a first database, ``dev`` on SQLite),
the one ``env.py``, ``script.py.mako`` and the first database's version
directory.  It never overwrites: a file that exists is skipped and reported,
so ``init`` can be run again to fill in what is missing (for example after
moving an old, non-orch ``env.py`` aside).  The templates are package data
(``orch/templates/*.tmpl``); the reference project's env.py and
script.py.mako are the same files, and a test keeps them so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from orch.config.alembic_ini import disagreements
from orch.config.registry import CONFIG_NAME, NAME_RE, _script_location, parse_registry
from orch.errors import OrchError, UsageError

_METADATA_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class Action:
    path: str  # relative to the project; directories end with "/"
    action: str  # created | skipped
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "action": self.action, "reason": self.reason or None}


@dataclass
class InitResult:
    root: Path
    database: str
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.root),
            "database": self.database,
            "files": [a.as_json() for a in self.actions],
            "notes": self.notes,
            "next_steps": self.next_steps,
        }


def template(name: str) -> str:
    """The text of a packaged template (``orch/templates/<name>.tmpl``)."""
    return (resources.files("orch") / "templates" / f"{name}.tmpl").read_text(encoding="utf-8")


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def init_project(
    directory: Path, database: str = "main", metadata: str | None = None
) -> InitResult:
    """Scaffold an orch project in *directory* (created if needed); never overwrite."""

    if not NAME_RE.match(database):
        raise UsageError(f"--database {database!r}: database names must match [a-z][a-z0-9_]*")
    if metadata is not None and not _METADATA_RE.match(metadata):
        raise UsageError(
            f"--metadata {metadata!r}: expected module:attribute, e.g. myapp.models:Base"
        )
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    result = InitResult(root, database)
    values = {
        "database": database,
        "DATABASE": database.upper(),
        "metadata": f"metadata: {metadata}" if metadata else "# metadata: myapp.models:Base",
    }

    def write(rel: Path, text: str) -> None:
        path = root / rel
        if path.exists():
            result.actions.append(Action(rel.as_posix(), "skipped", "exists; not changed"))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        result.actions.append(Action(rel.as_posix(), "created"))

    ini_existed = (root / "alembic.ini").exists()
    write(Path("alembic.ini"), _fill(template("alembic.ini"), values))
    registry_existed = (root / CONFIG_NAME).exists()
    write(Path(CONFIG_NAME), _fill(template("databases.yaml"), values))

    # an existing alembic.ini may point somewhere else: put env.py where Alembic looks
    scripts = _script_location(root)
    try:
        rel_scripts = scripts.relative_to(root)
    except ValueError:
        rel_scripts = scripts
    env_py = scripts / "env.py"
    if env_py.exists() and "orch" not in env_py.read_text(encoding="utf-8", errors="replace"):
        result.notes.append(
            f"{rel_scripts / 'env.py'} exists and is not orch's env.py; orch needs its own "
            f"(one env.py for every database). Move yours aside (keep what it customises) and run "
            f"'orch init' again; see the guide 'From a shell loop of alembic to orch'"
        )
    write(rel_scripts / "env.py", template("env.py"))
    write(rel_scripts / "script.py.mako", template("script.py.mako"))

    if registry_existed:
        result.notes.append(
            f"{CONFIG_NAME} exists: database {database!r} was not added to it; add it under "
            f"'databases:' yourself if it is new"
        )
    else:
        versions = rel_scripts / database
        if (root / versions).is_dir():
            result.actions.append(Action(f"{versions.as_posix()}/", "skipped", "exists"))
        else:
            (root / versions).mkdir(parents=True)
            result.actions.append(Action(f"{versions.as_posix()}/", "created"))
    if ini_existed:
        result.notes += _ini_notes(root)

    step = 1
    if not metadata:
        result.next_steps.append(
            f"{step}. name {database}'s models in {CONFIG_NAME}: "
            f"databases.{database}.metadata: yourapp.models:Base"
        )
        step += 1
    result.next_steps += [
        f'{step}. orch revision {database} -m "initial schema" --autogenerate',
        f"{step + 1}. orch upgrade --all",
        f"{step + 2}. orch status",
    ]
    return result


def _ini_notes(root: Path) -> list[str]:

    try:
        registry = parse_registry(root / CONFIG_NAME)
    except OrchError as exc:
        return [f"{CONFIG_NAME}: {exc}"]
    return disagreements(registry)
