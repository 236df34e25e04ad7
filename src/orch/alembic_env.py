"""The one name a project's ``migrations/env.py`` imports: ``job_from_context``.

It is public and stable (``orch init`` writes ``from orch.alembic_env import
job_from_context`` into every project); the implementation lives in
:mod:`orch.alembic_bridge.env`, with every other touch of Alembic.
"""

from orch.alembic_bridge.env import job_from_context

__all__ = ["job_from_context"]
