"""add users.display_name

Added nullable here; the next revision backfills it and makes it NOT NULL.

Batch mode: on SQLite the upgrade is a plain ADD COLUMN, the downgrade
rebuilds the table from ``_users_with_display_name()`` (``copy_from`` spares
the reflection, so ``--sql`` works offline too). Other backends get ALTER
TABLE.

Revision ID: 23231312a907
Revises: d5d862ab0321
Create Date: 2024-05-21 11:02:55.771204

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '23231312a907'
down_revision: Union[str, Sequence[str], None] = 'd5d862ab0321'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _users_with_display_name() -> sa.Table:
    """users as this revision leaves it (frozen here, not imported)."""
    return sa.Table(
        'users',
        sa.MetaData(),
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('is_active', sa.Boolean(), nullable=False),
        sa.Column('display_name', sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_users'),
        sa.UniqueConstraint('email', name='uq_users_email'),
        sa.Index('ix_users_created_at', 'created_at'),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('users') as batch_op:
        batch_op.add_column(
            sa.Column('display_name', sa.String(length=100), nullable=True)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table(
        'users', copy_from=_users_with_display_name()
    ) as batch_op:
        batch_op.drop_column('display_name')
