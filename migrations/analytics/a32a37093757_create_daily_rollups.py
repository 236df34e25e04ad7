"""create daily_rollups

Revision ID: a32a37093757
Revises: abdcce646ddc
Create Date: 2024-05-14 13:55:48.218730

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'a32a37093757'
down_revision: Union[str, Sequence[str], None] = 'abdcce646ddc'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'daily_rollups',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'kind', name='pk_daily_rollups'),
    )
    op.create_index(
        'ix_daily_rollups_kind', 'daily_rollups', ['kind'], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_daily_rollups_kind', table_name='daily_rollups')
    op.drop_table('daily_rollups')
