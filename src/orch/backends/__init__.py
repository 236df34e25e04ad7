"""What differs between database servers, owned in one place per backend.

Everything above this package asks a backend object (:func:`for_url`)
instead of branching on a backend's name; tests/test_backends_objects.py
checks that no module outside this package compares with, looks up or keys
on ``"postgresql"``, ``"mysql"``, ``"mariadb"`` or ``"sqlite"``.

- :mod:`orch.backends.base`: the :class:`Backend` interface.
- :mod:`orch.backends.sqlite`, :mod:`orch.backends.postgresql`,
  :mod:`orch.backends.mysql` (MySQL and MariaDB): one class per family.
- this module: the driver table (every URL scheme orch knows, async drivers
  as variants of their family), the one URL parser :func:`for_url`, and what
  spans the families (:func:`driver_problem`, :func:`describe_error`).

This package sits below :mod:`orch.config`: it imports only the base modules
(redact, errors) and, inside functions, SQLAlchemy and the drivers, so
``orch --help`` stays fast.
"""

from __future__ import annotations

import functools
import importlib.util
import re

from orch.backends.base import URL_RE, Backend, Driver
from orch.backends.base import describe_error as describe_error
from orch.backends.mysql import MySQL
from orch.backends.postgresql import PostgreSQL
from orch.backends.sqlite import SQLite
from orch.redact import redact_url

__all__ = [
    "ASYNC_DRIVERS",
    "DRIVERS",
    "Backend",
    "Driver",
    "UnsupportedURL",
    "describe_error",
    "driver_problem",
    "for_url",
    "is_async",
    "sync_url",
]

#: every family orch supports, by each spelling of its name in a scheme
FAMILIES: dict[str, type[Backend]] = {
    "sqlite": SQLite,
    "postgresql": PostgreSQL,
    "postgres": PostgreSQL,
    "mysql": MySQL,
    "mariadb": MySQL,
}


_PYSQLITE = Driver("sqlite", SQLite, None)
_PSYCOPG = Driver("postgresql+psycopg", PostgreSQL, "psycopg")
_PYMYSQL = Driver("mysql+pymysql", MySQL, "pymysql")
_PYMYSQL_MARIADB = Driver("mariadb+pymysql", MySQL, "pymysql")


def _table(*drivers: Driver) -> dict[str, Driver]:
    return {d.scheme: d for d in drivers}


#: scheme -> the driver orch knows it as.  Drivers with neither module nor fix
#: need nothing; a *fix* is what to use instead (unsupported or usually missing).
DRIVERS: dict[str, Driver] = _table(
    _PYSQLITE,
    Driver("sqlite+pysqlite", SQLite, None),
    _PSYCOPG,
    Driver("postgresql+psycopg2", PostgreSQL, "psycopg2", "postgresql+psycopg"),
    Driver("postgresql", PostgreSQL, "psycopg2", "postgresql+psycopg"),
    Driver("postgres", PostgreSQL, None, "postgresql+psycopg"),
    _PYMYSQL,
    _PYMYSQL_MARIADB,
    Driver("mysql", MySQL, "MySQLdb", "mysql+pymysql"),
    Driver("mysql+mysqldb", MySQL, "MySQLdb", "mysql+pymysql"),
    Driver("mariadb", MySQL, "MySQLdb", "mariadb+pymysql"),
    Driver("mariadb+mysqldb", MySQL, "MySQLdb", "mariadb+pymysql"),
    # async drivers (see orch.store.aio): migrations run through them, reads through the sync twin
    Driver("postgresql+asyncpg", PostgreSQL, "asyncpg", sync_driver=_PSYCOPG),
    Driver("sqlite+aiosqlite", SQLite, "aiosqlite", sync_driver=_PYSQLITE),
    Driver("mysql+aiomysql", MySQL, "aiomysql", sync_driver=_PYMYSQL),
    Driver("mariadb+aiomysql", MySQL, "aiomysql", sync_driver=_PYMYSQL_MARIADB),
    Driver("mysql+asyncmy", MySQL, "asyncmy", sync_driver=_PYMYSQL),
    Driver("mariadb+asyncmy", MySQL, "asyncmy", sync_driver=_PYMYSQL_MARIADB),
)

#: async driver scheme -> (driver module, the synchronous scheme of the same server)
ASYNC_DRIVERS: dict[str, tuple[str, str]] = {
    d.scheme: (d.module or "", d.sync_driver.scheme)
    for d in DRIVERS.values()
    if d.sync_driver is not None
}
_ASYNC_MODULES = {module for module, _ in ASYNC_DRIVERS.values()}


class UnsupportedURL(ValueError):
    """A URL of no family orch supports (the registry reports it before anything connects)."""


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def for_url(url: str) -> Backend:
    """The backend object of *url*: its family's class, knowing the URL's driver.

    A scheme missing from :data:`DRIVERS` but of a known family (an
    unsupported driver such as ``mysql+mysqlconnector``) still gets its
    family, so what orch knows about the server holds; :func:`driver_problem`
    is what refuses it.  Raises :class:`UnsupportedURL` for any other URL.
    """
    s = scheme(url)
    driver = DRIVERS.get(s) if "://" in url else None
    if driver is None:
        family = FAMILIES.get(s.split("+", 1)[0]) if "://" in url else None
        if family is None:
            raise UnsupportedURL(f"not a URL of a database orch supports: {redact_url(url)}")
        driver = Driver(s, family, None)
    return driver.family(url, driver)


def is_async(url: str) -> bool:
    """Whether *url* names one of the async drivers orch migrates through."""
    return scheme(url) in ASYNC_DRIVERS


def sync_url(url: str) -> str:
    """The URL of the same database through the synchronous driver (unchanged if not async).

    See :meth:`Backend.sync_url`: only the scheme changes, plus the query
    options the two drivers of one server spell differently.
    """
    if not is_async(url):
        return url
    return for_url(url).sync_url()


@functools.cache
def _installed(module: str) -> bool:
    """Whether *module* can be imported (asked once per module, not once per URL)."""
    return importlib.util.find_spec(module) is not None


def driver_problem(url: str) -> str | None:
    """Why orch cannot use the URL's driver, with the fix; None when it is fine.

    orch supports SQLite, PostgreSQL and MySQL/MariaDB through drivers it has
    a migration lock and a connect timeout for: pysqlite, psycopg 3 and PyMySQL,
    and the async drivers applications use (asyncpg, aiosqlite, aiomysql,
    asyncmy; see :mod:`orch.store.aio`), which need the optional ``async`` extra.
    Other drivers of those databases get the supported driver as the fix;
    ``mysql://`` means MySQLdb and ``postgresql://`` means psycopg2, which are
    usually not installed.  Looks modules up with ``importlib.util.find_spec``:
    no import.
    """
    m = re.match(r"^([A-Za-z][A-Za-z0-9+._\-]*)://", url)
    if not m:
        return f"not a database URL: {redact_url(url)!r}"
    s = m.group(1).lower()
    driver = DRIVERS.get(s)
    if driver is not None:
        module, fix = driver.module, driver.fix
        if module is None and fix is None:
            return None
        if module is not None and _installed(module):
            if module in _ASYNC_MODULES and not _installed("greenlet"):
                # SQLAlchemy's asyncio support needs greenlet (orch's "async" extra has it)
                return f"{s}:// needs greenlet, which is not installed; pip install greenlet"
            return _port_problem(url)
        if module is None:
            return f"{s}:// is not a SQLAlchemy URL scheme; use {fix}:// instead"
        if fix is None:  # a supported driver, not installed here
            extra = " (or 'orch[async]' for every async driver)" if module in _ASYNC_MODULES else ""
            return (
                f"{s}:// needs driver {module}, which is not installed; pip install {module}{extra}"
            )
        return f"{s}:// needs driver {module}, which is not installed; use {fix}:// instead"
    spelled, _, name = s.partition("+")
    family = FAMILIES.get(spelled)
    fix = family.recommended.get(spelled) if family is not None else None
    if fix is not None:
        return (
            f"driver {name!r} of {s}:// is not supported by orch (it needs a driver it "
            f"can lock with and set a connect timeout on); use {fix}:// instead"
            + _async_alternative(spelled)
        )
    return (
        f"unknown or unsupported database URL scheme {s!r}; orch supports sqlite://, "
        "postgresql+psycopg:// and mysql+pymysql:// (or mariadb+pymysql://)"
    )


def _async_alternative(spelled: str) -> str:
    """`` (async: postgresql+asyncpg://)`` for a family that has supported async drivers."""
    schemes = [s for s in ASYNC_DRIVERS if s.split("+")[0] == spelled]
    return f" (async: {' or '.join(s + '://' for s in schemes)})" if schemes else ""


def _port_problem(url: str) -> str | None:
    m = URL_RE.match(url)
    port = m["port"] if m else None
    if port and not port.isdigit():
        if m is not None and m["username"] is None:
            # user:password with no @host: what SQLAlchemy takes for the port may be a password
            return (
                f"the port is not a number in {redact_url(url)} (not shown: with no "
                "'@' before the host, the text after the first ':' may be a password)"
            )
        return f"port {port!r} is not a number in {redact_url(url)}"
    return None
