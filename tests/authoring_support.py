"""Helpers shared by the authoring tests (revision, check, --sql, history, init).

Models that a test changes live in a module with a unique name: orch runs
in-process in these tests and Python caches imported modules, so editing
``shop/models.py`` of a copied project would not be seen by the next run.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from conftest import Project
from minproj import table_names
from orch.config.registry import absolutize_sqlite


def url_of(p: Project, db: str, env: str = "dev") -> str:
    return absolutize_sqlite(str(p.registry()["environments"][env]["urls"][db]), p.root)


def sqlite_file(url: str) -> Path | None:
    m = re.match(r"^sqlite:///(.+)$", url)
    return Path(m.group(1)) if m else None


def tables(url: str) -> set[str]:
    """Tables of the database at *url* (a SQLite file that does not exist: empty, not created)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return set()
    return table_names(url)


def untouched(p: Project, env: str = "dev") -> bool:
    """True when no database of *env* has a table or (SQLite) even a file."""
    for db in p.registry()["environments"][env]["urls"]:
        url = url_of(p, db, env)
        path = sqlite_file(url)
        if path is not None and path.exists():
            return False
        if tables(url):
            return False
    return True


def models_module(p: Project, extra_core: str = "", extra_analytics: str = "") -> str:
    """Copy the reference models into a uniquely named package, append model code, and
    point the registry's ``metadata:`` at it.  Returns the package name."""
    name = f"models_{uuid.uuid4().hex[:10]}"
    pkg = p.root / "src" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    base = (p.root / "src" / "shop" / "models.py").read_text()
    (pkg / "models.py").write_text(base + "\n\n" + extra_core + "\n\n" + extra_analytics + "\n")
    data = p.registry()
    data["databases"]["core"]["metadata"] = f"{name}.models:core_metadata"
    data["databases"]["analytics"]["metadata"] = f"{name}.models:analytics_metadata"
    p.write_registry(data)
    return name


TAGS_MODEL = """
class Tag(CoreBase):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
"""


def new_files(p: Project, db: str, before: set[str]) -> list[Path]:
    return sorted(f for f in (p.root / "migrations" / db).glob("*.py") if f.name not in before)


def names(p: Project, db: str) -> set[str]:
    return {f.name for f in (p.root / "migrations" / db).glob("*.py")}
