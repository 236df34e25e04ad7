"""index accounts.plan and users.created_at

Revision ID: d5d862ab0321
Revises: 4d2e0c7783c8
Create Date: 2024-05-09 16:41:27.090321

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'd5d862ab0321'
down_revision: Union[str, Sequence[str], None] = '4d2e0c7783c8'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index('ix_accounts_plan', 'accounts', ['plan'], unique=False)
    op.create_index('ix_users_created_at', 'users', ['created_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_users_created_at', table_name='users')
    op.drop_index('ix_accounts_plan', table_name='accounts')
