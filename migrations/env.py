"""ONE env.py for every database of this project (multidb-style, independent histories).

orch runs each database with a Config whose ``version_locations`` is only that
database's directory and hands this file the database's connection (with its
migration lock held), metadata and options as ``config.attributes["orch"]``.

Run through plain ``alembic`` it needs to know which database and environment:

    alembic -c alembic.ini -x db=core -x env=dev upgrade core@head

(prefer ``orch upgrade core``: it locks, orders databases and keeps the log).
"""

from __future__ import annotations

from alembic import context

from orch.alembic_env import job_from_context

job = job_from_context(context)


def run_migrations_offline() -> None:
    """``--sql``: render SQL for this database's dialect without connecting."""
    context.configure(
        url=job.url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **job.configure_kwargs(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """One transaction per revision, on the connection orch locked."""
    with job.connect() as connection:
        context.configure(connection=connection, **job.configure_kwargs())
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
