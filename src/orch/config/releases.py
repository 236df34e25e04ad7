"""``releases.yaml``: named sets of every database's heads, written by ``orch release``.

A release is what the repository ships, so it records the *file* heads of
every database (what ``orch upgrade --all`` would bring a database to), not
what some environment happens to have applied: the file lives beside the
revisions (``<script_location>/releases.yaml``), is reviewed in git like
code, and means the same in every environment.  ``upgrade --to``/``downgrade
--to`` bring an environment to it; ``status`` tells which release each
database and environment is at.

The file::

    version: 1
    releases:
      - tag: v1
        created: "2026-11-30T10:15:00Z"
        message: first release
        heads: {core: [4d2e0c7783c8], analytics: [abdcce646ddc]}

A tag is written once: releasing a tag again is an error, whatever its heads.
Reading it is pure (no database, no Alembic).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.errors import Problem, RegistryError, UsageError

FILE_NAME = "releases.yaml"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: words that mean something else where a tag is accepted
RESERVED_TAGS = frozenset({"head", "heads", "base", "current"})


@dataclass(frozen=True)
class Release:
    """One tag: every database's head revisions when it was made (``()``: at base)."""

    tag: str
    created: str
    message: str = ""
    heads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "created": self.created,
            "message": self.message,
            "heads": {db: list(revs) for db, revs in self.heads.items()},
        }


@dataclass(frozen=True)
class Releases:
    """Every release of a project, oldest first."""

    path: Path
    releases: tuple[Release, ...] = ()

    def __iter__(self) -> Any:
        return iter(self.releases)

    def __len__(self) -> int:
        return len(self.releases)

    def get(self, tag: str) -> Release:
        """The release *tag*; a UsageError naming the known tags when there is none."""
        for r in self.releases:
            if r.tag == tag:
                return r
        known = ", ".join(r.tag for r in self.releases) or f"none yet in {self.path.name}"
        raise UsageError(f"unknown release {tag!r} (releases: {known}); see 'orch release'")

    def matching(self, heads: Mapping[str, Sequence[str] | None]) -> str | None:
        """The newest release whose heads for every database of *heads* are these.

        *heads* maps database -> its applied revisions (None: unknown, matches
        nothing).  A database the release does not list counts as at base
        there (it was added after the tag).
        """
        for r in reversed(self.releases):
            if all(
                cur is not None and sorted(cur) == sorted(r.heads.get(db, ()))
                for db, cur in heads.items()
            ):
                return r.tag
        return None


def releases_path(script_location: Path) -> Path:
    return script_location / FILE_NAME


def check_tag(tag: str) -> None:
    if not _TAG.match(tag) or tag in RESERVED_TAGS:
        raise UsageError(
            f"bad release tag {tag!r}: letters, digits and . _ + - (not starting with one of "
            f"these), and none of {', '.join(sorted(RESERVED_TAGS))}"
        )


def load_releases(path: Path) -> Releases:
    """The releases in *path* (none when the file does not exist); RegistryError if malformed."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Releases(path)
    except OSError as exc:
        raise RegistryError([Problem(str(path), "", f"cannot read: {exc.strerror}")]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError([Problem(str(path), "", f"not valid YAML: {exc}")]) from None
    if doc is None:
        return Releases(path)
    problems: list[Problem] = []

    def bad(key: str, why: str) -> None:
        problems.append(Problem(str(path), key, why))

    if not isinstance(doc, dict):
        bad("", "expected a mapping with 'version' and 'releases'")
        raise RegistryError(problems)
    if doc.get("version") != 1:
        bad("version", f"expected 1, got {doc.get('version')!r}")
    items = doc.get("releases") or []
    if not isinstance(items, list):
        bad("releases", "expected a list")
        items = []
    out: list[Release] = []
    tags: set[str] = set()
    for i, item in enumerate(items):
        key = f"releases[{i}]"
        if not isinstance(item, dict):
            bad(key, "expected a mapping with tag, created, message, heads")
            continue
        tag = item.get("tag")
        if not isinstance(tag, str) or not tag:
            bad(f"{key}.tag", "expected a non-empty string")
            continue
        if tag in tags:
            bad(f"{key}.tag", f"{tag!r} appears twice; a tag is written once")
        tags.add(tag)
        heads_raw = item.get("heads") or {}
        heads: dict[str, tuple[str, ...]] = {}
        if not isinstance(heads_raw, dict):
            bad(f"{key}.heads", "expected a mapping database -> list of revisions")
        else:
            for db, revs in heads_raw.items():
                if revs is None:
                    revs = []
                if not isinstance(revs, list) or not all(isinstance(r, str) for r in revs):
                    bad(f"{key}.heads.{db}", "expected a list of revision ids")
                    continue
                heads[str(db)] = tuple(revs)
        out.append(
            Release(tag, str(item.get("created") or ""), str(item.get("message") or ""), heads)
        )
    if problems:
        raise RegistryError(problems)
    return Releases(path, tuple(out))


def add_release(path: Path, release: Release) -> Releases:
    """Append *release* to the file at *path* (created if missing); a tag is written once.

    Written to a temporary file and renamed over the old one: an interrupted
    write leaves the previous file whole.
    """
    import yaml

    check_tag(release.tag)
    current = load_releases(path)
    if any(r.tag == release.tag for r in current):
        raise UsageError(
            f"release {release.tag!r} already exists in {path.name}; a tag is written once: "
            "choose a new tag"
        )
    everything = (*current.releases, release)
    doc = {"version": 1, "releases": [r.as_json() for r in everything]}
    text = (
        "# Written by 'orch release': each release names every database's head revisions.\n"
        "# Review it like code; a tag is never rewritten.\n"
        + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, allow_unicode=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return Releases(path, everything)
