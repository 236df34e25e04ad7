"""orch: run Alembic migrations for several databases that belong together.

The Python API is :class:`orch.Project` (:mod:`orch.service`)::

    import orch

    project = orch.Project.load("databases.yaml", env="staging")
    for db in project.status():
        print(db.name, db.state)

Everything named below is exported lazily (module ``__getattr__``): the
package is importable without SQLAlchemy, Alembic or Click being imported,
so ``import orch`` and ``orch --help`` stay fast; heavy modules are imported
inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Project": "orch.service",
    "Plan": "orch.service",
    "Retry": "orch.service",
    "RunResult": "orch.service",
    "StatusReport": "orch.service",
    "StatusMatrix": "orch.service",
    "CheckReport": "orch.service",
    "LogReport": "orch.service",
    "MigrationChecksReport": "orch.service",
    "SqlResult": "orch.service",
    "init": "orch.service",
    "State": "orch.outcomes",
    "Outcome": "orch.outcomes",
    "CheckState": "orch.outcomes",
    "Direction": "orch.outcomes",
    "OnFailure": "orch.outcomes",
    "Verdict": "orch.outcomes",
    "DbStatus": "orch.queries.status",
    "DbResult": "orch.run.execute",
    "OrchError": "orch.errors",
    "UsageError": "orch.errors",
    "RefusedError": "orch.errors",
    "RegistryError": "orch.errors",
    "ConfigNotFound": "orch.errors",
    "MissingVariable": "orch.errors",
    "DatabaseError": "orch.errors",
}

__all__ = [
    "__version__",
    "Project",
    "Plan",
    "Retry",
    "RunResult",
    "StatusReport",
    "StatusMatrix",
    "CheckReport",
    "LogReport",
    "MigrationChecksReport",
    "SqlResult",
    "init",
    "State",
    "Outcome",
    "CheckState",
    "Direction",
    "OnFailure",
    "Verdict",
    "DbStatus",
    "DbResult",
    "OrchError",
    "UsageError",
    "RefusedError",
    "RegistryError",
    "ConfigNotFound",
    "MissingVariable",
    "DatabaseError",
]

if TYPE_CHECKING:
    from orch.errors import (
        ConfigNotFound,
        DatabaseError,
        MissingVariable,
        OrchError,
        RefusedError,
        RegistryError,
        UsageError,
    )
    from orch.outcomes import CheckState, Direction, OnFailure, Outcome, State, Verdict
    from orch.queries.status import DbStatus
    from orch.run.execute import DbResult
    from orch.service import (
        CheckReport,
        LogReport,
        MigrationChecksReport,
        Plan,
        Project,
        Retry,
        RunResult,
        SqlResult,
        StatusMatrix,
        StatusReport,
        init,
    )


def __getattr__(name: str) -> Any:
    """Import the module of an exported name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
