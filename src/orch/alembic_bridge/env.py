"""What ``migrations/env.py`` calls: the :class:`~orch.alembic_bridge.job.Job` of the run.

Under orch the job is in ``config.attributes["orch"]``.  Under plain
``alembic`` it is built from ``-x db=NAME [-x env=ENV]`` and the registry
beside alembic.ini, so the one env.py still serves every database, a fleet's
tenants included (``-x db=tenant:acme``); without ``-x db`` it stops with a
message that says how to run it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orch.alembic_bridge.job import Job
from orch.config.registry import Registry, load_registry
from orch.errors import OrchError, UsageError


def job_from_context(context: Any) -> Job:
    config = context.config
    job = config.attributes.get("orch")
    if isinstance(job, Job):
        return job
    return _plain_alembic_job(context)


def _plain_alembic_job(context: Any) -> Job:
    from alembic.util import CommandError

    x = context.get_x_argument(as_dictionary=True)
    db_name = x.get("db")
    if not db_name:
        raise CommandError(
            "this env.py serves every database of an orch project: run it through orch "
            "('orch upgrade core', 'orch status'), or tell plain alembic which database and "
            "environment: alembic -x db=NAME -x env=ENV upgrade NAME@head"
        )
    ini = context.config.config_file_name
    where = Path(ini).resolve().parent if ini else Path.cwd()
    try:
        registry = _with_tenant(load_registry(None, cwd=where), db_name)
        # the same environment orch would use: -x env, else $ORCH_ENV, else default_env
        target = registry.target(x.get("env") or os.environ.get("ORCH_ENV"), db_name)
    except OrchError as exc:
        raise CommandError(str(exc)) from exc
    if target.url is None:
        raise CommandError(f"{db_name}: {target.missing}")
    return Job(registry, target.db, target.url)


def _with_tenant(registry: Registry, db_name: str) -> Registry:
    """*registry* with the tenant *db_name* (``fleet:tenant``) as a database of its own.

    A ``list`` or ``file`` fleet is read, and a name it does not hold is
    refused (a typo must not migrate a schema or database nobody listed); a
    ``query`` or ``command`` fleet is not run for one name (its catalog or
    program may be what the operator is working around): the name is taken
    as given, checked against the tenant-name rules like any other.
    """
    fleet, sep, tenant = db_name.partition(":")
    spec = registry.databases.get(fleet)
    if not sep or spec is None or not spec.is_fleet or spec.tenants is None:
        return registry
    found = {
        db.name: ([tenant] if db.name == fleet else [])
        for db in registry.databases.values()
        if db.is_fleet and db.tenants is not None and not db.tenants.in_config
    }
    expanded = registry.with_tenants(found)
    if db_name not in expanded.databases:
        why = "; ".join(expanded.rejected.get(fleet, ())) or (
            f"not one of its tenants ({spec.tenants.key(fleet)})"
        )
        raise UsageError(f"{db_name}: {why}")
    return expanded
