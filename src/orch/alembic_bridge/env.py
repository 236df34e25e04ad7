"""What ``migrations/env.py`` calls: the :class:`~orch.alembic_bridge.job.Job` of the run.

Under orch the job is in ``config.attributes["orch"]``.  Under plain
``alembic`` it is built from ``-x db=NAME [-x env=ENV]`` and the registry
beside alembic.ini, so the one env.py still serves every database; without
``-x db`` it stops with a message that says how to run it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orch.alembic_bridge.job import Job
from orch.config.registry import load_registry
from orch.errors import OrchError


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
        registry = load_registry(None, cwd=where)
        # the same environment orch would use: -x env, else $ORCH_ENV, else default_env
        target = registry.target(x.get("env") or os.environ.get("ORCH_ENV"), db_name)
    except OrchError as exc:
        raise CommandError(str(exc)) from exc
    if target.url is None:
        raise CommandError(f"{db_name}: {target.missing}")
    return Job(registry, target.db, target.url)
