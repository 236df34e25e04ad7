"""What the project declares on disk: ``databases.yaml`` (:mod:`.registry`), ``alembic.ini``
(:mod:`.alembic_ini`) and the revision files' headers (:mod:`.revisions`).

The bottom of orch's layers above the backends: it reads files, connects to
nothing and imports no SQLAlchemy or Alembic.
"""
