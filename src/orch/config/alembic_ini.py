"""alembic.ini's ``version_locations`` kept in step with the registry.

orch itself never reads ``version_locations``: it gives each database a
Config with only that database's directory.  Plain ``alembic`` (``alembic
heads``, an IDE plugin, a colleague's muscle memory) does read it, and a
directory missing there makes a database's revisions invisible to it.  So
orch says when the two disagree, and when ``orch revision`` creates a new
database directory it adds it to the line itself, editing that one line and
keeping every comment of the file.

Plain ``configparser``: no Alembic import, so this is cheap enough to run on
every ``check``.
"""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

from orch.config.registry import Registry

# Alembic's names for path_separator values (alembic/config.py)
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}


def ini_path(registry: Registry) -> Path:
    return registry.root / "alembic.ini"


def _read(ini: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
    try:
        parser.read(ini, encoding="utf-8")
    except (configparser.Error, OSError):
        return None
    return parser if parser.has_section("alembic") else None


def _separator(parser: configparser.ConfigParser) -> str | None:
    """The separator Alembic would use; None means its legacy split on spaces/commas."""
    for key in ("path_separator", "version_path_separator"):
        value = parser.get("alembic", key, fallback=None, raw=True)
        if value is not None:
            value = value.strip()
            return _SEPARATORS.get(value, value or None)
    return None


def configured_locations(registry: Registry) -> list[Path] | None:
    """The directories alembic.ini lists (resolved), or None when it lists none / has no ini."""
    ini = ini_path(registry)
    if not ini.is_file():
        return None
    parser = _read(ini)
    if parser is None:
        return None
    try:
        raw = parser.get("alembic", "version_locations", fallback=None)
    except configparser.Error:
        return None
    if raw is None or not raw.strip():
        return None
    sep = _separator(parser)
    parts = raw.split(sep) if sep is not None else re.split(r", *| +", raw)
    out: list[Path] = []
    for part in parts:
        part = part.strip()
        if part:
            path = Path(part)
            out.append((path if path.is_absolute() else registry.root / path).resolve())
    return out


def _shown(registry: Registry, path: Path) -> str:
    try:
        return str(path.relative_to(registry.root))
    except ValueError:
        return str(path)


def disagreements(registry: Registry) -> list[str]:
    """What plain ``alembic`` would get wrong with this alembic.ini, one line each."""
    ini = ini_path(registry)
    if not ini.is_file():
        return []
    wanted: dict[Path, list[str]] = {}
    for db in registry.databases.values():
        wanted.setdefault(db.versions.resolve(), []).append(db.name)
    listed = configured_locations(registry)
    if listed is None:
        if not registry.databases:
            return []
        dirs = ", ".join(_shown(registry, d) for d in wanted)
        return [
            f"{ini.name}: no version_locations; plain 'alembic' will not see the revisions in "
            f"{dirs} (add: version_locations = {_suggest(registry, list(wanted))})"
        ]
    problems: list[str] = []
    listed_set = set(listed)
    for directory, names in wanted.items():
        if directory not in listed_set:
            problems.append(
                f"{ini.name}: version_locations does not list {_shown(registry, directory)} "
                f"(database {', '.join(names)}); plain 'alembic' will not see its revisions"
            )
    for directory in listed:
        if directory not in wanted:
            problems.append(
                f"{ini.name}: version_locations lists {_shown(registry, directory)}, which no "
                f"database of {registry.path.name} uses"
            )
    return problems


def _suggest(registry: Registry, dirs: list[Path]) -> str:
    return os.pathsep.join(f"%(here)s/{_shown(registry, d)}" for d in dirs)


def add_location(registry: Registry, directory: Path) -> str | None:
    """Add *directory* to alembic.ini's ``version_locations`` line.

    Returns what was done (or what the user should do when the line cannot be
    edited safely), or None when nothing needed doing.  Only that one line is
    rewritten; comments and layout stay.
    """
    ini = ini_path(registry)
    if not ini.is_file():
        return None
    listed = configured_locations(registry)
    directory = directory.resolve()
    if listed is not None and directory in listed:
        return None
    parser = _read(ini)
    entry = f"%(here)s/{_shown(registry, directory)}"
    if parser is None:
        return f"{ini.name}: cannot read it; add {entry} to version_locations yourself"
    sep = _separator(parser)
    text = ini.read_text(encoding="utf-8")
    section = re.search(r"^\[alembic\][ \t]*$(?P<body>.*?)(?=^\[|\Z)", text, re.M | re.S)
    if section is None:  # pragma: no cover - _read found the section
        return f"{ini.name}: add {entry} to version_locations yourself"
    body = section["body"]
    line = re.search(r"^version_locations[ \t]*[=:][ \t]*(?P<value>[^\n]*)$", body, re.M)
    if listed is None:
        joiner = " " if sep is None or sep == "\n" else sep
        wanted = list(dict.fromkeys([db.versions.resolve() for db in registry.databases.values()]))
        if directory not in wanted:
            wanted.append(directory)
        new_line = "version_locations = " + joiner.join(
            f"%(here)s/{_shown(registry, d)}" for d in wanted
        )
        if line is not None:  # present but empty
            start = section.start("body") + line.start()
            end = section.start("body") + line.end()
        else:
            loc = re.search(r"^script_location[ \t]*[=:][^\n]*$", body, re.M)
            anchor = section.start("body") + (loc.end() if loc else 0)
            start = end = anchor
            new_line = "\n" + new_line if loc else new_line + "\n"
        ini.write_text(text[:start] + new_line + text[end:], encoding="utf-8")
        return f"{ini.name}: set version_locations to list every database's directory"
    continued = line is not None and re.match(r"\n[ \t]+\S", body[line.end() :]) is not None
    if line is None or sep == "\n" or continued:
        return (
            f"{ini.name}: version_locations spans several lines; add {entry} to it yourself "
            "so plain 'alembic' sees the new database"
        )
    value = line["value"].rstrip()
    joiner = sep if sep is not None else " "
    new_value = f"{value}{joiner}{entry}" if value else entry
    start = section.start("body") + line.start("value")
    end = section.start("body") + line.end("value")
    ini.write_text(text[:start] + new_value + text[end:], encoding="utf-8")
    return f"{ini.name}: added {entry} to version_locations"
