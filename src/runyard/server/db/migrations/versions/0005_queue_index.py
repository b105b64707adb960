"""queue index: a pool's waiting runs in id order

Revision ID: 0005
Revises: 0004

A claim reads the first page of its pool's queue. Through ix_runs_pool_state
it read every waiting run of the pool and sorted them; this partial index
holds only waiting runs, in the order a claim takes them.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

WAITING = "state IN ('QUEUED', 'CONFIRMED')"


def upgrade() -> None:
    op.create_index('ix_runs_waiting', 'runs', ['pool_id', 'id'], unique=False,
                    sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING))


def downgrade() -> None:
    op.drop_index('ix_runs_waiting', table_name='runs')
