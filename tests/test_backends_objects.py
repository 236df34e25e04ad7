"""Backends as objects: one place per server, and nobody else branching on a server's name.

What differs between SQLite, PostgreSQL and MySQL/MariaDB lives in
``orch.backends`` (one class per family; the async drivers are variants of
theirs).  The architecture check here reads every other module of orch with
``ast`` and fails on code that decides by a backend's name; the rest pins the
two places orch relies on a library's internals (PyMySQL's private timeouts,
the psycopg dialect's ``dbname`` connect argument) against real servers, so
a library that changes shape fails here loudly instead of in production.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# -- no branching on a backend's name outside orch.backends

_FAMILIES = {"postgresql", "postgres", "mysql", "mariadb", "sqlite"}
# a method called with a name as its first argument is a lookup or a test on it
_LOOKUPS = {"get", "pop", "setdefault", "startswith", "endswith", "index", "count"}
#: modules allowed to name a backend in a test, with why, and how many times
_ALLOWED = {
    # orch.redact sits below orch.backends (which shows URLs through it) and may not
    # import it; a SQLite URL has a path where others have userinfo: '@' and ':' in it
    # are not a password
    "orch/redact.py": 2,
    # the lint rules are one rule set per SQL dialect (PostgreSQL's grammar through pglast,
    # MySQL's and SQLite's through sqlglot): the dialect, chosen by the backend object
    # (for_url(url).name), is their subject, not a server's behaviour orch relies on
    "orch/queries/lint/rules.py": 5,
}


def _names_backend(node: ast.AST) -> bool:
    """A string constant that is a backend's name or a URL scheme of one (``mysql+pymysql``)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_backend(e) for e in node.elts)
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    m = re.match(r"[a-z]+", node.value.lower())
    if m is None or m.group(0) not in _FAMILIES:
        return False
    rest = node.value[m.end() :]
    return rest == "" or rest.startswith(("+", ":"))  # not "sqlite3", not "mysql error"


def backend_branches(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place *source* decides by a backend's name.

    Caught: comparisons and membership tests with a name (``kind == "sqlite"``,
    ``x in ("mysql", "mariadb")``, ``dialect.name != "postgresql"``), dict keys
    (a table keyed by backend), subscripts (``PORTS["mysql"]``), lookups and
    prefix tests (``.get("mysql")``, ``.startswith("sqlite")``) and ``case``
    patterns.  Allowed: the names anywhere else (docstrings, messages, a
    value assigned or passed on), since saying a name is not deciding by it.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_names_backend(o) for o in [node.left, *node.comparators]):
                found.append((node.lineno, "comparison with a backend's name"))
        elif isinstance(node, ast.Dict):
            if any(k is not None and _names_backend(k) for k in node.keys):
                found.append((node.lineno, "dict keyed by a backend's name"))
        elif isinstance(node, ast.Subscript):
            if _names_backend(node.slice):
                found.append((node.lineno, "subscript with a backend's name"))
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in _LOOKUPS
                and node.args
                and _names_backend(node.args[0])
            ):
                found.append((node.lineno, f".{func.attr}() with a backend's name"))
        elif isinstance(node, ast.MatchValue) and _names_backend(node.value):
            found.append((node.lineno, "case pattern with a backend's name"))
    return sorted(found)


def test_no_module_outside_backends_branches_on_a_backend_name() -> None:
    """Every decision by server lives in orch.backends; everyone else asks the object."""
    problems = []
    for path in sorted((SRC / "orch").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("orch/backends/"):
            continue
        hits = backend_branches(path.read_text(encoding="utf-8"))
        if len(hits) != _ALLOWED.get(rel, 0):
            problems += [f"src/{rel}:{line}: {what}" for line, what in hits] or [
                f"src/{rel}: {_ALLOWED[rel]} allowed, none left: lower _ALLOWED"
            ]
    assert problems == [], "ask orch.backends.for_url(url) instead:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "code",
    [
        # each from orch before backends were objects
        'if kind == "postgresql":\n    pass',
        'x = self.conn.dialect.name != "postgresql"',
        'x = backend(url) in ("postgresql", "sqlite")',
        'if scheme in ("mariadb", "mysql"):\n    pass',
        'MAX_IDENTIFIER = {"postgresql": 63, "mysql": 64}',
        '_DRIVERS = {"mysql+pymysql": ("pymysql", None)}',
        'var = _PASSWORD_VARS["mysql"]',
        'port = _DEFAULT_PORTS.get("postgresql", "")',
        'ok = name.lower().startswith("sqlite")',
        'match kind:\n    case "mysql":\n        pass',
        'ok = url.startswith(("postgres://", "postgresql+psycopg://"))',
    ],
)
def test_the_check_finds_a_branch_on_a_name(code: str) -> None:
    assert backend_branches(code), code


@pytest.mark.parametrize(
    "code",
    [
        '"""On MySQL a schema is a database; SQLite has no server."""',
        'raise ValueError("needs a PostgreSQL or mysql server")',
        'msg = f"on MySQL/MariaDB a schema is a database: {x}"',
        'name = "postgresql"',  # saying the name is not deciding by it
        'show(backend="mysql")',
        'if module == "sqlite3":\n    pass',  # the stdlib driver module, not a backend
        'if kind == "applied":\n    pass',
        'if err.startswith("mysql error"):\n    pass',
    ],
)
def test_the_check_lets_names_be_said(code: str) -> None:
    assert backend_branches(code) == [], code


# -- for_url: the one URL parser


def test_for_url_gives_the_family_and_the_driver() -> None:
    from orch.backends import for_url
    from orch.backends.mysql import MySQL
    from orch.backends.postgresql import PostgreSQL
    from orch.backends.sqlite import SQLite

    cases = {
        "sqlite:///x.db": (SQLite, "", False),
        "sqlite+aiosqlite:///x.db": (SQLite, "aiosqlite", True),
        "postgresql+psycopg://u@h/db": (PostgreSQL, "psycopg", False),
        "postgresql+asyncpg://u@h/db": (PostgreSQL, "asyncpg", True),
        "mysql+pymysql://u@h/db": (MySQL, "pymysql", False),
        "mariadb+asyncmy://u@h/db": (MySQL, "asyncmy", True),
        "MySQL+aiomysql://u@h/db": (MySQL, "aiomysql", True),
        "mysql+mysqlconnector://u@h/db": (MySQL, "mysqlconnector", False),  # refused elsewhere
    }
    for url, (family, driver, is_async) in cases.items():
        b = for_url(url)
        assert (type(b), b.driver.name, b.is_async) == (family, driver, is_async), url
        # an async driver's twin is the same family through the synchronous driver
        assert type(b.sync()) is family and not b.sync().is_async
    for bad in ("oracle://u@h/db", "sqlite", ""):
        with pytest.raises(ValueError, match="not a URL of a database orch supports"):
            for_url(bad)


def test_the_backend_owns_what_differs() -> None:
    from orch.backends import for_url

    pg, my, lite = (
        for_url("postgresql+asyncpg://u:pw@h/db"),
        for_url("mariadb+pymysql://u:pw@h/db"),
        for_url("sqlite:///x.db"),
    )
    assert (pg.default_port, my.default_port, lite.default_port) == (5432, 3306, None)
    assert (pg.transactional_ddl, my.transactional_ddl, lite.transactional_ddl) == (
        True,
        False,
        True,
    )
    assert (pg.password_env, my.password_env, lite.password_env) == (
        "PGPASSWORD",
        "MYSQL_PWD",
        None,
    )
    assert (pg.max_identifier, my.max_identifier, lite.max_identifier) == (63, 64, None)
    assert (pg.lock_needs_connection, lite.lock_needs_connection) == (True, False)
    assert lite.alembic_options(as_sql=False) == {
        "render_as_batch": True,
        "transactional_ddl": True,
    }
    assert lite.alembic_options(as_sql=True) == {"render_as_batch": True}
    assert pg.alembic_options(as_sql=False) == {"render_as_batch": False}
    # sync and async connect arguments: the driver's own names for the connect timeout
    assert pg.async_connect_args(2) == {"timeout": 2.0}
    assert pg.sync().connect_args(2, readonly=False) == {"connect_timeout": 2}
    assert my.connect_args(2, readonly=True) == {"connect_timeout": 2, "read_timeout": 30}
    assert for_url("mysql+aiomysql://u@h/db").async_connect_args(2) == {"connect_timeout": 2.0}
    assert "pw" not in pg.display() and "pw" not in repr(my)


def test_identity_is_what_makes_two_urls_one_database(tmp_path: Path) -> None:
    from orch.backends import for_url

    def same(a: str, b: str, schema: str | None = None) -> bool:
        return for_url(a).identity(schema, "v") == for_url(b).identity(schema, "v")

    # loopback names and default ports; login and driver do not matter
    assert same("postgresql+psycopg://a@localhost/db", "postgresql+asyncpg://b:x@127.0.0.1:5432/db")
    assert not same("postgresql+psycopg://a@h/db1", "postgresql+psycopg://a@h/db2")
    # PostgreSQL: no database means the user's; the default schema is public
    assert same("postgresql+psycopg://app@h", "postgresql+psycopg://app@h/app")
    assert for_url("postgresql+psycopg://u@h/db").identity(None, "v")[3] == "public"
    # MySQL: a schema is a database
    assert same("mysql+pymysql://u@h/one", "mariadb+pymysql://u@h:3306/two", schema="s")
    # SQLite: the file
    db = tmp_path / "a.db"
    assert same(f"sqlite:///{db}", f"sqlite+aiosqlite:///{tmp_path}/./a.db")


# -- third-party internals, pinned on real servers


def test_pymysql_connections_have_the_private_timeouts_orch_sets(
    make_db: Callable[..., str],
) -> None:
    """The shape orch relies on: PyMySQL keeps and applies ``_read_timeout``/``_write_timeout``."""
    import importlib
    import inspect

    from sqlalchemy.engine import make_url

    from orch.backends.mysql import PYMYSQL_TIMEOUT_ATTRS

    pymysql: Any = importlib.import_module("pymysql")  # untyped: no stubs
    u = make_url(make_db("mysql"))
    conn = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        read_timeout=7,
    )
    try:
        for attr in PYMYSQL_TIMEOUT_ATTRS.values():
            assert hasattr(conn, attr), f"PyMySQL connections lost {attr}"
        assert conn._read_timeout == 7 and conn._write_timeout is None
    finally:
        conn.close()
    # and they are what bounds each socket read and write
    cls = pymysql.connections.Connection
    assert "self._read_timeout" in inspect.getsource(cls._read_bytes)
    assert "self._write_timeout" in inspect.getsource(cls._write_bytes)


def test_a_pymysql_without_the_private_timeouts_is_a_clear_error() -> None:
    """Were they renamed, orch would leave every statement cut off at connect_timeout: refuse."""
    from orch.backends.mysql import _restore_timeouts
    from orch.errors import DatabaseError

    class Renamed:  # a PyMySQL connection whose attributes moved
        read_timeout_ = None

    with pytest.raises(DatabaseError, match=r"has no _read_timeout, _write_timeout .*connect_"):
        _restore_timeouts(Renamed(), {"read_timeout": None, "write_timeout": None})


def test_a_statement_may_run_longer_than_the_connect_timeout_on_mariadb(
    make_db: Callable[..., str],
) -> None:
    """The handshake is bounded by connect_timeout, the migration's statements are not."""
    from sqlalchemy import text

    from orch.store.aio import run_on_connection

    url = make_db("mysql")

    def work(conn: Any) -> Any:
        return conn.execute(text("SELECT SLEEP(3)")).scalar()

    # the migration connection orch opens (see orch.run.execute)
    assert run_on_connection(url, 2, work) == 0


def test_the_shared_postgresql_engine_reads_each_database(make_db: Callable[..., str]) -> None:
    """status reads many databases through one engine per server: each sees its own rows."""
    from sqlalchemy import text

    from orch.backends import for_url
    from orch.backends.postgresql import shared_engine
    from orch.store.db import connect

    urls = [make_db("postgresql"), make_db("postgresql")]
    for i, url in enumerate(urls):
        with connect(url, 5) as conn:
            conn.execute(text("CREATE TABLE t (v text)"))
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": f"row of {i}"})
            conn.commit()
    seen = []
    for url in urls:
        with connect(url, 5, readonly=True, shared=True) as conn:
            seen.append(conn.execute(text("SELECT v FROM t")).scalar_one())
    assert seen == ["row of 0", "row of 1"]
    engines = {id(shared_engine(for_url(url), 5)[0]) for url in urls}
    assert len(engines) == 1, "one engine for the databases of one server"


def test_the_backends_import_no_sqlalchemy_or_driver() -> None:
    """orch.backends sits under orch.config, which ``orch --help`` imports: it must stay light."""
    import subprocess
    import sys

    code = (
        "import sys, orch.backends, orch.backends.sqlite, orch.backends.postgresql, "
        "orch.backends.mysql\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'pymysql', 'psycopg', 'asyncpg', 'aiomysql', 'asyncmy', 'aiosqlite', "
        "'sqlite3', 'alembic'))\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
