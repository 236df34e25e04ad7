"""widen events.kind to VARCHAR(64), index (kind, occurred_at)

Batch mode: SQLite rebuilds the table from the frozen definitions below
(``copy_from`` spares the reflection, so ``--sql`` works offline too); other
backends get ALTER TABLE. MySQL's MODIFY restates the whole column, hence
``existing_nullable``. The downgrade narrows the column back: PostgreSQL and
strict-mode MySQL refuse it while a kind is longer than 32 characters
(SQLite does not enforce VARCHAR lengths).

Revision ID: 3ac111ed6cf1
Revises: a32a37093757
Create Date: 2024-05-28 10:33:06.917342

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '3ac111ed6cf1'
down_revision: Union[str, Sequence[str], None] = 'a32a37093757'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _events(kind_length: int) -> sa.Table:
    """events without the (kind, occurred_at) index (frozen here)."""
    return sa.Table(
        'events',
        sa.MetaData(),
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=kind_length), nullable=False),
        sa.Column('occurred_at', sa.DateTime(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_events'),
        sa.Index('ix_events_user_id', 'user_id'),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('events', copy_from=_events(32)) as batch_op:
        batch_op.alter_column(
            'kind',
            existing_type=sa.String(length=32),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
    op.create_index(
        'ix_events_kind_occurred_at',
        'events',
        ['kind', 'occurred_at'],
        unique=False,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_events_kind_occurred_at', table_name='events')
    with op.batch_alter_table('events', copy_from=_events(64)) as batch_op:
        batch_op.alter_column(
            'kind',
            existing_type=sa.String(length=64),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
