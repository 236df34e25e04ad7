"""A fleet's tenants from the sources that need more than a file: a ``query`` (run
read-only on another database of the environment) and a ``command`` (its stdout,
one name a line).

Read when the environment is used, once per command; the names go down to
:meth:`orch.config.registry.Registry.with_tenants`, which validates them like
any other source's.  A source that fails is a usage error (exit 2) naming it.
"""

from __future__ import annotations

import shlex
import subprocess

from orch.backends import for_url
from orch.config.fleets import TenantSource
from orch.config.registry import Registry
from orch.errors import OrchError, UsageError
from orch.redact import redact
from orch.store.db import connect

#: How long a tenant command may run, in seconds
COMMAND_TIMEOUT = 300.0


def read_sources(registry: Registry, env: str | None) -> dict[str, list[str]]:
    """The names of every ``query``/``command`` fleet of *registry* (the environment's view)."""
    out: dict[str, list[str]] = {}
    for db in registry.databases.values():
        source = db.tenants
        if source is None or source.in_config or not db.is_fleet:
            continue
        if source.kind == "query":
            out[db.name] = _query(registry, env, db.name, source)
        else:
            out[db.name] = _command(registry, env, db.name, source)
    return out


def _query(registry: Registry, env: str | None, fleet: str, source: TenantSource) -> list[str]:
    from sqlalchemy import text

    key = source.key(fleet)
    assert source.database is not None and source.sql is not None
    try:
        target = registry.target(env, source.database)
    except OrchError as exc:
        raise UsageError(f"{key}: {exc}") from None
    if target.url is None:
        raise UsageError(f"{key}: {source.database}: {target.missing}")
    try:
        conn = connect(target.url, registry.settings.connect_timeout, readonly=True)
    except OrchError as exc:
        raise UsageError(f"{key}: cannot connect to {source.database}: {exc}") from None
    try:
        guard = for_url(target.url).readonly_session_sql
        if guard:  # the server refuses any write the query would make
            conn.execute(text(guard))
            conn.commit()
        rows = conn.execute(text(source.sql)).all()
        conn.rollback()
    except Exception as exc:  # noqa: BLE001 - any failure of the user's SQL names the source
        from orch.store.db import describe_error

        raise UsageError(f"{key}: the query failed: {describe_error(exc)}") from None
    finally:
        conn.close()
    names: list[str] = []
    for row in rows:
        if len(row) != 1 or not isinstance(row[0], str):
            raise UsageError(f"{key}: the query must return one text column (a name a row)")
        names.append(row[0])
    return names


def _command(registry: Registry, env: str | None, fleet: str, source: TenantSource) -> list[str]:
    key = source.key(fleet)
    assert source.command is not None
    name = registry.environment(env).name  # a plain word: [a-z][a-z0-9_-]*
    line = source.command.replace("{env}", shlex.quote(name))
    try:
        done = subprocess.run(
            line,
            shell=True,
            cwd=registry.root,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"{key}: still running after {COMMAND_TIMEOUT:.0f}s") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{key}: cannot run it: {exc}") from None
    if done.returncode != 0:
        last = redact(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else ""
        raise UsageError(
            f"{key}: exited with {done.returncode}" + (f": {last[:300]}" if last else "")
        )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]
