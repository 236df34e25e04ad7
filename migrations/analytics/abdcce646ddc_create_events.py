"""create events

Revision ID: abdcce646ddc
Revises:
Create Date: 2024-05-02 09:20:11.604158

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'abdcce646ddc'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = ('analytics',)
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'events',
        sa.Column('id', sa.Integer(), nullable=False),
        # users.id in the core database: no foreign key across databases.
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('occurred_at', sa.DateTime(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_events'),
    )
    op.create_index('ix_events_user_id', 'events', ['user_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_events_user_id', table_name='events')
    op.drop_table('events')
