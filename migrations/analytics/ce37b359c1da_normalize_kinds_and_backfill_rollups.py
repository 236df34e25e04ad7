"""normalize event kinds, backfill daily_rollups

A data step: SQL expressions through ``op.execute`` (never
``op.get_bind()``) and without bound parameters, so ``upgrade --sql``
renders them offline. ``lower()``, ``date()`` and ``count(*)`` exist on
SQLite, PostgreSQL and MySQL/MariaDB.

Revision ID: ce37b359c1da
Revises: 3ac111ed6cf1
Create Date: 2024-06-11 15:08:19.482650

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'ce37b359c1da'
down_revision: Union[str, Sequence[str], None] = '3ac111ed6cf1'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Lightweight, frozen table stubs: only the columns this step touches.
events = sa.table(
    'events',
    sa.column('kind', sa.String(64)),
    sa.column('occurred_at', sa.DateTime()),
)
daily_rollups = sa.table(
    'daily_rollups',
    sa.column('day', sa.Date()),
    sa.column('kind', sa.String(64)),
    sa.column('count', sa.Integer()),
)


def upgrade() -> None:
    """Upgrade schema."""
    # Kinds were written in mixed case ("Login", "login"); one spelling.
    # No WHERE kind <> lower(kind): MySQL's default collation compares
    # case-insensitively and would skip every row.
    op.execute(sa.update(events).values(kind=sa.func.lower(events.c.kind)))
    # Rebuild the rollups from the events (derived data).
    op.execute(sa.delete(daily_rollups))
    day = sa.func.date(events.c.occurred_at)
    op.execute(
        sa.insert(daily_rollups).from_select(
            ['day', 'kind', 'count'],
            sa.select(day, events.c.kind, sa.func.count())
            .group_by(day, events.c.kind),
        )
    )


def downgrade() -> None:
    """Downgrade schema.

    Nothing to undo: lower-case kinds and rebuilt rollups are valid data
    for the previous revision, and the original spellings are gone.
    """
    pass
