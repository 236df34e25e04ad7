"""The :class:`Job` of one database's run: what ``migrations/env.py`` reads.

orch puts a Job in ``config.attributes["orch"]`` (the connection it locked,
the metadata, the options); under plain ``alembic`` :mod:`.env` builds one
from ``-x db=NAME``.  Both paths configure Alembic with the same keywords.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orch.backends import for_url
from orch.config.registry import DatabaseSpec, Registry
from orch.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection


@dataclass
class Job:
    """What ``migrations/env.py`` needs to run one database (see :func:`configure_kwargs`)."""

    registry: Registry
    db: DatabaseSpec
    url: str
    connection: Connection | None = None
    as_sql: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.db.name

    def metadata(self) -> MetaData | None:
        return load_metadata(self.registry, self.db)

    def configure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``context.configure`` (besides connection/url)."""
        opts: dict[str, Any] = {
            "target_metadata": self.metadata(),
            "version_table": self.db.version_table,
            "version_table_schema": self.db.version_table_schema,
            "transaction_per_migration": True,
            "compare_type": True,
            "include_object": self.include_object,
        }
        if self.db.version_table_schema:
            opts["include_schemas"] = False
        # render_as_batch, transactional_ddl: see orch.backends (SQLite's table-copy ALTERs)
        opts.update(for_url(self.url).alembic_options(as_sql=self.as_sql))
        opts.update(self.extra)
        return opts

    def include_object(
        self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        """Leave orch's own table, the version table and ``exclude_tables`` alone."""
        if type_ == "table" and name is not None:
            if name in (self.registry.settings.log_table, self.db.version_table):
                return False
            if self.db.excluded(name):
                return False
        if type_ in ("index", "column", "unique_constraint", "foreign_key_constraint"):
            table = getattr(obj, "table", None)
            tname = getattr(table, "name", None)
            if tname and (self.db.excluded(tname) or tname == self.registry.settings.log_table):
                return False
        return True

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """The migration connection: orch's (lock held) or, under plain alembic, a new one.

        Under plain alembic an async URL connects through the sync driver of
        the same server (see :mod:`orch.store.aio`): this context manager has no
        event loop to run the async driver in.  orch itself migrates through
        the async driver.
        """
        if self.connection is not None:
            yield self.connection
            return
        from orch.store.db import connect

        conn = connect(self.url, self.registry.settings.connect_timeout)
        try:
            yield conn
        finally:
            conn.close()


def load_metadata(registry: Registry, db: DatabaseSpec) -> MetaData | None:
    """Import ``module:attribute`` with the registry's ``prepend_sys_path``."""
    if not db.metadata:
        return None
    module_name, _, attr = db.metadata.partition(":")
    add_sys_path(registry)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(
            f"{registry.path}: databases.{db.name}.metadata: cannot import {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"{registry.path}: databases.{db.name}.metadata: {module_name!r} has no "
                f"attribute {attr!r}"
            )
        obj = getattr(obj, part)
    from sqlalchemy import MetaData

    if not isinstance(obj, MetaData):
        metadata = getattr(obj, "metadata", None)  # a declarative Base is fine too
        if isinstance(metadata, MetaData):
            return metadata
        raise UsageError(
            f"{registry.path}: databases.{db.name}.metadata: {db.metadata} is a "
            f"{type(obj).__name__}, not a SQLAlchemy MetaData"
        )
    return obj


def add_sys_path(registry: Registry) -> None:
    for p in reversed(registry.prepend_sys_path):
        s = str(p)
        if s not in sys.path:
            sys.path.insert(0, s)
