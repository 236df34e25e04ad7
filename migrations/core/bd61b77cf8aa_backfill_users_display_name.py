"""backfill users.display_name from email, then make it NOT NULL

A data step: plain SQL through ``op.execute`` (never ``op.get_bind()``), so
``upgrade --sql`` renders it offline. ``substr`` exists on SQLite,
PostgreSQL and MySQL/MariaDB; it keeps the value within VARCHAR(100).

Revision ID: bd61b77cf8aa
Revises: 23231312a907
Create Date: 2024-06-03 08:27:40.334911

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'bd61b77cf8aa'
down_revision: Union[str, Sequence[str], None] = '23231312a907'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _users(display_name_nullable: bool) -> sa.Table:
    """users as revision 23231312a907 / this revision leave it (frozen)."""
    return sa.Table(
        'users',
        sa.MetaData(),
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('is_active', sa.Boolean(), nullable=False),
        sa.Column(
            'display_name', sa.String(length=100), nullable=display_name_nullable
        ),
        sa.PrimaryKeyConstraint('id', name='pk_users'),
        sa.UniqueConstraint('email', name='uq_users_email'),
        sa.Index('ix_users_created_at', 'created_at'),
    )


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(
        "UPDATE users SET display_name = substr(email, 1, 100) "
        "WHERE display_name IS NULL"
    )
    with op.batch_alter_table('users', copy_from=_users(True)) as batch_op:
        batch_op.alter_column(
            'display_name',
            existing_type=sa.String(length=100),
            nullable=False,
        )


def downgrade() -> None:
    """Downgrade schema.

    Only the constraint is undone; the backfilled names stay (harmless for
    the nullable column of the previous revision).
    """
    with op.batch_alter_table('users', copy_from=_users(False)) as batch_op:
        batch_op.alter_column(
            'display_name',
            existing_type=sa.String(length=100),
            nullable=True,
        )
