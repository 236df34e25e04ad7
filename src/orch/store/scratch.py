"""Throwaway databases: created next to an environment's database, dropped after.

``orch test`` and the pytest plugin migrate fresh databases, never the
environment's own.  A throwaway database lives where the environment's
database lives, with its login: a new SQLite file in a temporary directory,
or a new database on the same PostgreSQL or MariaDB/MySQL server (the
login must be allowed to ``CREATE DATABASE``).  The two functions here are
the only backend knowledge ``orch test`` needs; they move to the backend
modules when those own such knowledge.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from orch.errors import DatabaseError
from orch.store.db import backend, describe_error

#: how throwaway databases are named: orch_test_<db>_<random>
PREFIX = "orch_test_"
#: longest database name PostgreSQL (63) and MySQL (64) both accept
_MAX_NAME = 63


def scratch_name(db: str) -> str:
    """``orch_test_<db>_<8 hex digits>``: recognisable, unique, short enough everywhere."""
    tail = secrets.token_hex(4)
    middle = re.sub(r"[^a-z0-9_]", "_", db.lower())[: _MAX_NAME - len(PREFIX) - len(tail) - 1]
    return f"{PREFIX}{middle}_{tail}"


def _server_url(url: str, database: str | None) -> str:
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    # URL.set() ignores None: build the URL anew to leave the database out (MySQL)
    server = URL.create(
        u.drivername, u.username, u.password, u.host, u.port, database, dict(u.query)
    )
    return server.render_as_string(hide_password=False)


def _admin_urls(url: str) -> list[str]:
    """Where to send CREATE/DROP DATABASE: never the database being created or dropped.

    PostgreSQL needs some database to connect to: its maintenance database
    ``postgres``, else ``template1``.  MySQL connects to the server alone.
    """
    if backend(url) == "postgresql":
        return [_server_url(url, "postgres"), _server_url(url, "template1")]
    return [_server_url(url, None)]


def _execute_admin(url: str, statement: str, connect_timeout: float) -> None:
    from sqlalchemy import text

    from orch.store.db import make_engine

    last: Exception | None = None
    for admin in _admin_urls(url):
        engine = make_engine(admin, connect_timeout).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
                return
        except Exception as exc:
            last = exc
            if getattr(exc, "orig", None) is None or "does not exist" not in str(exc):
                break  # only a missing maintenance database is worth another try
        finally:
            engine.dispose()
    assert last is not None
    raise DatabaseError(describe_error(last)) from last


def create_database(url: str, db: str, directory: Path, connect_timeout: float = 5.0) -> str:
    """A new empty database beside *url* (same server and login); its URL.

    SQLite: a new file in *directory*.  The URL keeps everything of *url* but
    the database (driver, login, query options); an async driver's URL becomes
    its synchronous twin's, which is what orch reads and migrates through here.
    """
    from orch.backends import sync_url

    url = sync_url(url)
    name = scratch_name(db)
    kind = backend(url)
    if kind == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{directory / name}.db"
    if kind == "postgresql":
        statement = f'CREATE DATABASE "{name}"'
    elif kind == "mysql":
        statement = f"CREATE DATABASE `{name}`"
    else:
        raise DatabaseError(f"cannot create a throwaway {kind} database (no support for {kind})")
    try:
        _execute_admin(url, statement, connect_timeout)
    except DatabaseError as exc:
        raise DatabaseError(f"cannot create a throwaway database {name}: {exc}") from exc
    return _server_url(url, name)


def drop_database(url: str, connect_timeout: float = 5.0) -> None:
    """Drop a database :func:`create_database` made (only those: the name is checked)."""
    from sqlalchemy.engine import make_url

    kind = backend(url)
    if kind == "sqlite":
        path = make_url(url).database or ""
        if not Path(path).name.startswith(PREFIX):
            raise ValueError(f"not a throwaway database: {path}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        return
    name = make_url(url).database or ""
    if not name.startswith(PREFIX):
        raise ValueError(f"not a throwaway database: {name}")
    if kind == "postgresql":
        try:
            # FORCE (PostgreSQL 13+): a connection a failed revision left open must not keep it
            _execute_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', connect_timeout)
        except DatabaseError:
            _execute_admin(url, f'DROP DATABASE IF EXISTS "{name}"', connect_timeout)
    else:
        _execute_admin(url, f"DROP DATABASE IF EXISTS `{name}`", connect_timeout)
