"""orch: run Alembic migrations for several databases that belong together.

The package is importable without SQLAlchemy or Alembic being imported: heavy
modules are imported inside the functions that need them, so ``orch --help``
stays fast.
"""

__version__ = "0.1.0"
