"""Generated projects for the benchmark and the fleet tests: N databases x K revisions.

Each project has orch's side (databases.yaml, alembic.ini, the reference
project's one env.py) and, optionally, the setup a team without orch runs
today: ``plain/alembic.ini`` with one section per database, each database
with its own ordinary env.py (Alembic's generic template), so a shell loop of
``alembic -c plain/alembic.ini -n NAME current`` works.  Revisions are small
and realistic: one CREATE TABLE each, Alembic's own file layout.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _alembic_command() -> list[str]:
    script = Path(sys.executable).with_name("alembic")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]


ALEMBIC = _alembic_command()


def rev_id(tag: str, i: int) -> str:
    return hashlib.sha1(f"{tag}:{i}".encode()).hexdigest()[:12]


REVISION = '''"""create table t_{i}

Revision ID: {rev}
Revises: {down_doc}
Create Date: 2024-01-01 00:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = {rev!r}
down_revision: Union[str, Sequence[str], None] = {down!r}
branch_labels: Union[str, Sequence[str], None] = {labels!r}
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "t_{i}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=50), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("t_{i}")
'''


def write_revisions(directory: Path, label: str, k: int) -> list[str]:
    """K small linear revisions (one CREATE TABLE each); returns their ids, oldest first."""
    directory.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    for i in range(k):
        rev = rev_id(f"{directory}:{label}", i)
        down = ids[-1] if ids else None
        (directory / f"{rev}_create_t_{i}.py").write_text(
            REVISION.format(
                i=i, rev=rev, down=down, down_doc=down or "", labels=(label,) if i == 0 else None
            )
        )
        ids.append(rev)
    return ids


PLAIN_ENV = '''"""Alembic's generic env.py: one per database, the way teams run a loop today."""
from logging.config import fileConfig

from sqlalchemy import engine_from_config, pool

from alembic import context

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)
target_metadata = None


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

LOGGING_INI = """
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARNING
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


@dataclass
class Project:
    root: Path
    names: list[str]
    urls: dict[str, str]
    heads: dict[str, list[str]]  # database -> its revision ids, oldest first

    def orch(self, *args: str) -> list[str]:
        """``orch ARGS`` as a user runs it (the package on the benchmark's PYTHONPATH)."""
        return [sys.executable, "-m", "orch", *args]

    def plain(self, name: str, *args: str) -> list[str]:
        """One ``alembic`` process for database *name*, as in a team's shell loop."""
        return [*ALEMBIC, "-c", str(self.root / "plain" / "alembic.ini"), "-n", name, *args]


def make_project(
    root: Path, urls: dict[str, str], k: int, *, shared: bool = False, plain: bool = True
) -> Project:
    """A project of len(urls) databases x *k* revisions: orch's registry and a plain-Alembic setup.

    *shared*: every database uses one version directory and branch label
    (tenants or shards of one schema), as the registry allows.
    """
    if root.exists():
        shutil.rmtree(root)
    mig = root / "migrations"
    mig.mkdir(parents=True)
    shutil.copy(ROOT / "migrations" / "env.py", mig / "env.py")
    shutil.copy(ROOT / "migrations" / "script.py.mako", mig / "script.py.mako")
    names = list(urls)
    heads: dict[str, list[str]] = {}
    lines = ["version: 1", "default_env: bench", "settings:", "  connect_timeout: 5", "databases:"]
    if shared:
        ids = write_revisions(mig / "shared", "shared", k)
        for n in names:
            heads[n] = ids
            lines += [f"  {n}:", "    versions: migrations/shared", "    branch: shared"]
    else:
        for n in names:
            heads[n] = write_revisions(mig / n, n, k)
            lines.append(f"  {n}: {{}}")
    lines += ["environments:", "  bench:", "    urls:"]
    lines += [f"      {n}: {urls[n]}" for n in names]
    (root / "databases.yaml").write_text("\n".join(lines) + "\n")
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n" + LOGGING_INI
    )
    if plain:
        sections = []
        for n in names:
            d = root / "plain" / n
            d.mkdir(parents=True)
            (d / "env.py").write_text(PLAIN_ENV)
            shutil.copy(ROOT / "migrations" / "script.py.mako", d / "script.py.mako")
            versions = mig / ("shared" if shared else n)
            sections.append(
                f"[{n}]\nscript_location = {d}\nversion_locations = {versions}\n"
                f"path_separator = os\nsqlalchemy.url = {urls[n]}\n"
            )
        (root / "plain" / "alembic.ini").write_text("\n".join(sections) + LOGGING_INI)
    return Project(root, names, urls, heads)


def stamped_at(project: Project, index: int, name: str) -> str:
    """The revision the benchmark puts database number *index* at."""
    ids = project.heads[name]
    return ids[-1] if index % 4 else ids[max(0, len(ids) - 4)]


def stamp_sqlite(project: Project) -> None:
    """Give every SQLite database a version row: most at head, every 4th three behind."""
    for i, n in enumerate(project.names):
        path = Path(project.urls[n].split("///", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        at = stamped_at(project, i, n)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
        con.execute("DELETE FROM alembic_version")
        con.execute("INSERT INTO alembic_version VALUES (?)", (at,))
        con.commit()
        con.close()
