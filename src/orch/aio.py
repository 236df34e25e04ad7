"""Async driver URLs: migrations through the application's own driver, reads through its sync twin.

Applications built on asyncio configure ``postgresql+asyncpg://``,
``sqlite+aiosqlite://``, ``mysql+aiomysql://`` or ``mysql+asyncmy://`` (and
``mariadb+`` spellings).  orch accepts these URLs as they are, so a team
keeps one URL per database, and a history that relies on the async driver's
behaviour (asyncpg's type handling differs from psycopg's) runs through that
driver.

There is one migration code path.  orch's migration work (lock, audit rows,
Alembic's MigrationContext, hooks) is synchronous and runs on a SQLAlchemy
``Connection``; for an async URL :func:`run` opens an ``AsyncEngine`` in a new
event loop and hands the same work the sync ``Connection`` facade of
``AsyncConnection.run_sync`` (the pattern of Alembic's own async template).
The loop is created per call, so every worker process makes its own after
the fork and none is ever shared across one.

Read-only commands (status, plan, history, check, log, ``--sql``) read
through the synchronous driver of the same server (:func:`sync_url`): the
same server, database, login and version rows, hence the same results,
without an event loop per database, and with the per-server engine sharing
``status`` relies on for large fleets.

This module imports nothing heavy at import time (``orch --help`` stays fast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

#: async driver scheme -> (driver module, the synchronous scheme of the same server)
ASYNC_DRIVERS: dict[str, tuple[str, str]] = {
    "postgresql+asyncpg": ("asyncpg", "postgresql+psycopg"),
    "sqlite+aiosqlite": ("aiosqlite", "sqlite"),
    "mysql+aiomysql": ("aiomysql", "mysql+pymysql"),
    "mariadb+aiomysql": ("aiomysql", "mariadb+pymysql"),
    "mysql+asyncmy": ("asyncmy", "mysql+pymysql"),
    "mariadb+asyncmy": ("asyncmy", "mariadb+pymysql"),
}

#: URL query options that only the async driver understands (dropped for its sync twin)
_ASYNC_ONLY_QUERY = {
    "postgresql": {
        "prepared_statement_cache_size",
        "prepared_statement_name_func",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "command_timeout",
        "timeout",
    },
}


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def is_async(url: str) -> bool:
    """Whether *url* names one of the async drivers orch migrates through."""
    return scheme(url) in ASYNC_DRIVERS


def sync_url(url: str) -> str:
    """The URL of the same database through the synchronous driver (unchanged if not async).

    Only the scheme changes, plus the few query options that differ between
    the two drivers of one server: asyncpg's ``ssl=`` is libpq's ``sslmode=``
    (same values), and asyncpg's statement-cache and timeout options have no
    meaning for psycopg (libpq would refuse them).  Host, port, login,
    database and every other option stay as written.
    """
    s = scheme(url)
    if s not in ASYNC_DRIVERS:
        return url
    target = ASYNC_DRIVERS[s][1]
    rest = url.split("://", 1)[1]
    if "?" not in rest or not target.startswith("postgresql"):
        return f"{target}://{rest}"
    from urllib.parse import parse_qsl, urlencode

    head, query = rest.split("?", 1)
    drop = _ASYNC_ONLY_QUERY["postgresql"]
    pairs = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in drop:
            continue
        pairs.append(("sslmode" if key == "ssl" else key, value))
    return f"{target}://{head}" + (f"?{urlencode(pairs)}" if pairs else "")


def make_engine(url: str, connect_timeout: float = 5.0) -> AsyncEngine:
    """An AsyncEngine for *url* with the connect timeout of the sync engines.

    asyncpg takes ``timeout``, aiomysql and asyncmy ``connect_timeout``,
    aiosqlite passes ``timeout`` (the busy timeout) to sqlite3.  On top of
    that :func:`run` bounds the whole connect (TCP, greeting, login) by the
    same timeout, like the PyMySQL handshake bound of the sync path.  SQLite
    gets the same transactional-DDL recipe as pysqlite (explicit ``BEGIN``).
    """
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from orch.db import _sqlite_transactional, backend, mysql_utf8_password
    from orch.errors import DatabaseError
    from orch.redact import redact
    from orch.registry import sqlite_path

    kind = backend(url)
    connect_args: dict[str, Any] = {}
    timeout = max(1.0, float(connect_timeout)) if connect_timeout else None
    if kind == "postgresql":
        if timeout:
            connect_args["timeout"] = timeout
    elif kind == "mysql":
        if timeout:
            connect_args["connect_timeout"] = timeout
    elif kind == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = max(connect_timeout or 5.0, 5.0)
    try:
        engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    except Exception as exc:  # bad URL, missing driver or greenlet
        raise DatabaseError(f"cannot use URL {redact(url)}: {redact(str(exc))}") from exc
    if kind == "sqlite":
        _sqlite_transactional(engine.sync_engine)
    elif kind == "mysql":
        mysql_utf8_password(engine.sync_engine)
    return engine


def run(url: str, connect_timeout: float, work: Callable[[Connection], T]) -> T:
    """Open a connection through *url*'s async driver and run ``work(connection)`` on it.

    *work* gets the sync ``Connection`` facade of ``run_sync`` and may do
    anything it does on a sync connection (every statement is awaited on the
    driver underneath).  A failed connect raises a redacted
    :class:`~orch.errors.DatabaseError`, like :func:`orch.db.connect`; what
    *work* raises propagates.  A new event loop per call: safe in forked
    workers, never shared across a fork.
    """
    import asyncio

    return asyncio.run(_run(url, connect_timeout, work))


async def _run(url: str, connect_timeout: float, work: Callable[[Connection], T]) -> T:
    import asyncio

    from orch.db import describe_error
    from orch.errors import DatabaseError

    engine = make_engine(url, connect_timeout)
    try:
        try:
            if connect_timeout:
                aconn = await asyncio.wait_for(engine.connect().start(), connect_timeout)
            else:
                aconn = await engine.connect().start()
        except TimeoutError as exc:
            raise DatabaseError(
                f"connection timed out: no connection within {connect_timeout:g}s"
            ) from exc
        except Exception as exc:
            raise DatabaseError(describe_error(exc)) from exc
        try:
            with _abort_by_cancelling():
                return await aconn.run_sync(work)
        finally:
            with contextlib.suppress(Exception):
                await aconn.close()
    finally:
        with contextlib.suppress(Exception):
            await engine.dispose()


@contextlib.contextmanager
def _abort_by_cancelling() -> Iterator[None]:
    """Let a second SIGINT/SIGTERM abort a revision that waits on the async driver.

    The sync path aborts by raising KeyboardInterrupt from the signal handler
    in the middle of the driver's wait.  Here the wait is the event loop's:
    an exception raised there would leave the loop and strand the revision.
    So when the signal lands in the loop (the revision awaits a statement),
    the migration task is cancelled instead: the driver cancels the
    statement, the sync code sees CancelledError at that statement, and
    :func:`orch.stopping.abortable` turns it into the KeyboardInterrupt the
    migration code handles.  When the signal lands while the revision's own
    Python code runs (inside run_sync's greenlet), KeyboardInterrupt is
    raised right there, as on the sync path.
    """
    import asyncio

    from greenlet import getcurrent

    from orch import stopping

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    outer = getcurrent()  # the loop's greenlet; run_sync's work runs in a child of it

    def cancel() -> None:
        # the task may have run on between the signal and this callback: cancel
        # only a revision still in flight (a finished one is past aborting)
        if task is not None and stopping.revision_running():
            task.cancel()

    def abort() -> bool:
        if task is None or getcurrent() is not outer:
            return False  # in the sync work: raise KeyboardInterrupt there
        loop.call_soon_threadsafe(cancel)  # also wakes the loop out of its select
        return True

    previous = stopping.set_loop_abort(abort)
    try:
        yield
    finally:
        stopping.set_loop_abort(previous)
