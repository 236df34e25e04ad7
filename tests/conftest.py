"""Shared fixtures: real servers, one uniquely named database per test, a reference project copy.

Servers come from ``ORCH_TEST_POSTGRES_URL`` / ``ORCH_TEST_MYSQL_URL`` (defaults:
a PostgreSQL and a MariaDB on 127.0.0.1, as the README says).  When a server cannot be
reached, its tests skip with a message saying how to provide one, except
under ``CI=true``, where they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click.testing
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get(
    "ORCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("ORCH_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql", "mysql")
_HOW = {
    "postgresql": "set ORCH_TEST_POSTGRES_URL=postgresql+psycopg://USER@HOST:PORT/postgres "
    "(a role that may CREATE DATABASE)",
    "mysql": "set ORCH_TEST_MYSQL_URL=mysql+pymysql://root@HOST:PORT/mysql "
    "(a user that may CREATE DATABASE)",
}
_REACHABLE: dict[str, str | None] = {}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): an unreachable server."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def server_problem(kind: str) -> str | None:
    """None if the server of *kind* answers, else why not (cached per session)."""
    if kind == "sqlite":
        return None
    if kind not in _REACHABLE:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        url = PG_URL if kind == "postgresql" else MYSQL_URL
        try:
            eng = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("SELECT 1"))
            _REACHABLE[kind] = None
        except Exception as exc:  # noqa: BLE001
            _REACHABLE[kind] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _REACHABLE[kind]


def require_server(kind: str) -> None:
    problem = server_problem(kind)
    if problem is None:
        return
    msg = f"{kind} server not reachable ({problem}); {_HOW[kind]}"
    if IN_CI:
        pytest.fail(f"CI=true: {msg}")
    pytest.skip(msg)


def _admin_url(kind: str) -> str:
    return PG_URL if kind == "postgresql" else MYSQL_URL


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_engine(kind: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(_admin_url(kind), poolclass=NullPool, isolation_level="AUTOCOMMIT")


def create_database(kind: str, name: str, *, login: tuple[str, str] | None = None) -> str:
    """Create database *name*; with *login* = (user, password), a login that owns it.

    The returned URL connects as that login (password in the URL), so tests can
    prove a real, accepted password never shows in orch's output.
    """
    with _admin_engine(kind).connect() as c:
        run = _raw(c)
        if kind == "postgresql":
            if login:
                user, pw = login
                role = _pg_ident(user)
                run(f"CREATE ROLE {role} LOGIN PASSWORD {_pg_literal(pw)}")
                run(f'CREATE DATABASE "{name}" OWNER {role}')
            else:
                run(f'CREATE DATABASE "{name}"')
        else:
            run(f"CREATE DATABASE `{name}`")
            if login:
                user, pw = login
                account = f"{_my_literal(user)}@'%'"
                run(f"CREATE USER {account} IDENTIFIED BY {_my_literal(pw)}")
                run(f"GRANT ALL PRIVILEGES ON `{name}`.* TO {account}")
    url = _with_database(_admin_url(kind), name)
    if login:
        from sqlalchemy.engine import make_url

        user, pw = login
        url = make_url(url).set(username=user, password=pw).render_as_string(hide_password=False)
    return url


def _raw(conn: Any) -> Callable[[str], None]:
    """Run SQL on the driver's cursor without parameters.

    Neither text() (':x' is a bind parameter) nor exec_driver_sql ('%' is a
    placeholder to the driver): a password may hold both.  Quotes and
    backslashes are escaped by the callers for each server's literals.
    """

    def run(sql: str) -> None:
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    return run


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"  # standard_conforming_strings: '\\' is literal


def _my_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def drop_database(kind: str, name: str, *, login: str | None = None) -> None:
    with _admin_engine(kind).connect() as c:
        run = _raw(c)
        if kind == "postgresql":
            run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if login:
                run(f"DROP ROLE IF EXISTS {_pg_ident(login)}")
        else:
            run(f"DROP DATABASE IF EXISTS `{name}`")
            if login:
                run(f"DROP USER IF EXISTS {_my_literal(login)}@'%'")


@contextlib.contextmanager
def _db_factory(tmp: Path) -> Iterator[Callable[..., str]]:
    created: list[tuple[str, str, str | None]] = []

    def factory(kind: str, *, password: str | None = None, user: str | None = None) -> str:
        if kind == "sqlite":
            path = tmp / "dbs" / f"db_{uuid.uuid4().hex[:8]}.db"
            path.parent.mkdir(exist_ok=True)
            return f"sqlite:///{path}"
        require_server(kind)
        name = f"orch_t_{uuid.uuid4().hex[:12]}"
        if password is None:
            user = None
        elif user is None:
            user = f"orch_u_{uuid.uuid4().hex[:12]}"
        login = (user, password) if user is not None and password is not None else None
        created.append((kind, name, user))
        return create_database(kind, name, login=login)

    try:
        yield factory
    finally:
        for kind, name, user in created:
            t = threading.Thread(
                target=_drop_quietly, args=(kind, name, user), name="orch-drop", daemon=True
            )
            t.start()
            _DROPS.append(t)


# PostgreSQL's DROP DATABASE waits for a checkpoint (2-5 s here): tests hand their
# drops to background threads and the session waits for every one at its end
# (pytest_sessionfinish), so each database is still dropped, without the wait.
# One short-lived thread per drop, not a pool: an idle pool thread would stay
# alive all session and make every in-process multi-database run use "spawn"
# workers instead of the fork the CLI uses (see execute.start_method).
_DROPS: list[threading.Thread] = []


def _drop_quietly(kind: str, name: str, user: str | None) -> None:
    try:
        drop_database(kind, name, login=user)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not drop {kind} database {name}: {exc}", file=sys.stderr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Wait until every database and login the tests created is dropped."""
    for t in _DROPS:
        t.join()


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: ``make_db(kind)`` -> URL of a new, empty, uniquely named database.

    ``make_db(kind, password="...")`` also creates a login (PostgreSQL role,
    MariaDB user) with that password that owns the database, and returns a URL
    with it (user name and password percent-encoded); the login is dropped with
    the database.  ``user=`` names the login (any characters; unique per test).
    SQLite has no logins.
    """
    with _db_factory(tmp_path) as factory:
        yield factory


@pytest.fixture(scope="module")
def make_module_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """``make_db`` whose databases live for the whole test module (read-only sharing)."""
    with _db_factory(tmp_path_factory.mktemp("module_dbs")) as factory:
        yield factory


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrize a test over SQLite, PostgreSQL and MariaDB/MySQL."""
    kind = str(request.param)
    require_server(kind)
    return kind


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


@dataclass
class Project:
    """A copy of the reference project in a temporary directory."""

    root: Path

    @property
    def registry_path(self) -> Path:
        return self.root / "databases.yaml"

    def registry(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.registry_path.read_text()))

    def write_registry(self, data: dict[str, Any]) -> None:
        self.registry_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def set_urls(self, env: str, urls: dict[str, str], **env_keys: Any) -> None:
        data = self.registry()
        data.setdefault("environments", {})[env] = {"urls": urls, **env_keys}
        self.write_registry(data)

    def url(self, db: str, env: str = "dev") -> str:
        """The URL of *db* in *env* as orch resolves it (relative SQLite paths: from root)."""
        url = str(self.registry()["environments"][env]["urls"][db])
        m = re.match(r"^sqlite:///(?!/)(.*)$", url)
        return f"sqlite:///{self.root / m.group(1)}" if m else url

    def missing_file(self, db: str, env: str = "dev") -> bool:
        """True for a SQLite database whose file does not exist (these helpers never create it)."""
        url = self.url(db, env)
        return url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists()

    @contextlib.contextmanager
    def connect(self, db: str, env: str = "dev") -> Iterator[Any]:
        """A SQLAlchemy connection to *db* (the test's own, outside orch)."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        assert not self.missing_file(db, env), f"{db}: no SQLite file yet"
        eng = create_engine(self.url(db, env), poolclass=NullPool)
        try:
            with eng.connect() as conn:
                yield conn
        finally:
            eng.dispose()

    def versions(
        self,
        db: str,
        env: str = "dev",
        *,
        table: str = "alembic_version",
        schema: str | None = None,
    ) -> list[str]:
        """The version rows of *db* as stored (what plain Alembic would read)."""
        from sqlalchemy import inspect, text

        if self.missing_file(db, env):
            return []
        with self.connect(db, env) as conn:
            if not inspect(conn).has_table(table, schema=schema):
                return []
            name = f"{schema}.{table}" if schema else table
            return sorted(conn.execute(text(f"SELECT version_num FROM {name}")).scalars())

    def tables(self, db: str, env: str = "dev", *, schema: str | None = None) -> set[str]:
        from sqlalchemy import inspect

        if self.missing_file(db, env):
            return set()
        with self.connect(db, env) as conn:
            return set(inspect(conn).get_table_names(schema=schema))

    def orch(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> Result:
        """Run orch in-process (like the console script) from the project directory."""
        return run_orch(list(args), cwd=self.root, env=env, input=input)

    def orch_proc(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m orch`` in a subprocess (for races, signals and real isolation)."""
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "orch", *args],
            cwd=self.root,
            env=full_env,
            capture_output=True,
            text=True,
            **kw,
        )


def run_orch(
    args: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> Result:
    """Call :func:`orch.cli.main` as the console script would, capturing stdout and stderr apart."""
    from orch.cli import main

    runner = click.testing.CliRunner()
    old = Path.cwd()
    code = 0
    with runner.isolation(input=input, env=env) as streams:
        if cwd is not None:
            os.chdir(cwd)
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old)
        out = streams[0].getvalue().decode()
        err = streams[1].getvalue().decode()
    return Result(code, out, err)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The reference project (registry, alembic.ini, migrations, models) copied to tmp."""
    return copy_project(tmp_path / "proj")


def copy_project(root: Path) -> Project:
    """Copy the reference project to *root* (which must not exist yet)."""
    root.mkdir(parents=True)
    for name in ("databases.yaml", "alembic.ini"):
        shutil.copy(REPO / name, root / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=skip)
    shutil.copytree(REPO / "src" / "shop", root / "src" / "shop", ignore=skip)
    return Project(root)


@pytest.fixture
def backend_project(project: Project, backend: str, make_db: Callable[..., str]) -> Project:
    """The reference project whose default environment ``dev`` runs on *backend*."""
    if backend != "sqlite":
        project.set_urls("dev", {"core": make_db(backend), "analytics": make_db(backend)})
    return project
