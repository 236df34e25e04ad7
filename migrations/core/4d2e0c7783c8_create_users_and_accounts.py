"""create users and accounts

Revision ID: 4d2e0c7783c8
Revises:
Create Date: 2024-05-02 09:14:03.512877

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '4d2e0c7783c8'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = ('core',)
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('is_active', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_users'),
        sa.UniqueConstraint('email', name='uq_users_email'),
    )
    op.create_table(
        'accounts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('plan', sa.String(length=32), nullable=False),
        sa.Column('balance_cents', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'], name='fk_accounts_user_id_users'
        ),
        sa.PrimaryKeyConstraint('id', name='pk_accounts'),
    )
    op.create_index('ix_accounts_user_id', 'accounts', ['user_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    # No drop_index first: MySQL/MariaDB refuse to drop the index that backs
    # the foreign key (error 1553); dropping the table drops its indexes.
    op.drop_table('accounts')
    op.drop_table('users')
