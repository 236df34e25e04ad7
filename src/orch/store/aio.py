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
through the synchronous driver of the same server (:func:`orch.backends.sync_url`): the
same server, database, login and version rows, hence the same results,
without an event loop per database, and with the per-server engine sharing
``status`` relies on for large fleets.

This module imports nothing heavy at import time (``orch --help`` stays fast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from orch import stopping
from orch.backends import for_url, is_async
from orch.errors import DatabaseError
from orch.store.db import connect, describe_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


def make_engine(url: str, connect_timeout: float = 5.0) -> AsyncEngine:
    """An AsyncEngine for *url* with the connect timeout of the sync engines.

    Each driver's connect arguments are its backend's
    (:meth:`orch.backends.Backend.async_connect_args`): asyncpg takes
    ``timeout``, aiomysql and asyncmy ``connect_timeout``, aiosqlite passes
    ``timeout`` (the busy timeout) to sqlite3.  On top of that :func:`run`
    bounds the whole connect (TCP, greeting, login) by the same timeout,
    like the PyMySQL handshake bound of the sync path.  SQLite gets the same
    transactional-DDL recipe as pysqlite (explicit ``BEGIN``).
    """

    return for_url(url).make_async_engine(connect_timeout)


def run(url: str, connect_timeout: float, work: Callable[[Connection], T]) -> T:
    """Open a connection through *url*'s async driver and run ``work(connection)`` on it.

    *work* gets the sync ``Connection`` facade of ``run_sync`` and may do
    anything it does on a sync connection (every statement is awaited on the
    driver underneath).  A failed connect raises a redacted
    :class:`~orch.errors.DatabaseError`, like :func:`orch.store.db.connect`; what
    *work* raises propagates.  A new event loop per call: safe in forked
    workers, never shared across a fork.
    """
    import asyncio

    return asyncio.run(_run(url, connect_timeout, work))


async def _run(url: str, connect_timeout: float, work: Callable[[Connection], T]) -> T:
    import asyncio

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


#: Migration connections kept open for the next database of the same URL (a fleet's
#: tenants as schemas of one database), per process: see :func:`run_on_connection`
_KEPT: dict[str, Connection] = {}


def close_kept() -> None:
    """Close the connections :func:`run_on_connection` kept (the end of a run or a worker)."""
    while _KEPT:
        _url, conn = _KEPT.popitem()
        with contextlib.suppress(Exception):
            conn.close()


def run_on_connection(
    url: str,
    connect_timeout: float,
    work: Callable[[Connection], T],
    *,
    keep: bool = False,
    shared: bool = False,
) -> T:
    """Open the migration connection of *url*, run ``work(connection)``, close it.

    The one entry point of the code that migrates: a sync driver's URL gets
    a :func:`connect` connection; an async driver's (``postgresql+asyncpg``,
    ``sqlite+aiosqlite``, ``mysql+aiomysql``, ``mysql+asyncmy``) runs the same
    *work* through that driver, on the sync facade of ``run_sync`` (see
    this module).  A failed connect is a redacted :class:`DatabaseError`
    either way; what *work* raises propagates.

    *keep* (sync drivers): the connection stays open afterwards for the next
    call with the same URL in this process, if it is still healthy (no
    transaction open, not invalidated): a worker then migrates 1,000 tenant
    schemas of one database over one connection and one dialect set-up.
    The caller ends them with :func:`close_kept`.

    *shared* (sync drivers): the connection may come from the Engine the
    databases of one server share (:func:`orch.store.db.connect`), for the
    tenant databases of a fleet: one dialect set-up and one compiled-SQL
    cache per worker instead of one per tenant.
    """

    if is_async(url):
        return run(url, connect_timeout, work)
    conn = _KEPT.pop(url, None) if keep else None
    if conn is not None and (conn.invalidated or conn.closed):
        conn = None
    if conn is None:
        conn = connect(url, connect_timeout, shared=shared)
    healthy = False
    try:
        result = work(conn)
        healthy = keep
        return result
    finally:
        if healthy and not conn.invalidated and not conn.in_transaction():
            old = _KEPT.pop(url, None)
            _KEPT[url] = conn
            if old is not None:  # pragma: no cover - one connection per URL at a time
                with contextlib.suppress(Exception):
                    old.close()
        else:
            with contextlib.suppress(Exception):
                conn.close()
