"""trigger keys: a run triggered twice under one Idempotency-Key is one run

Revision ID: 0006
Revises: 0005

A client that got no answer to a trigger (a timeout, a failover) sends it
again, perhaps to another server; the key it sends with both makes the
second one find the first run instead of queuing another.
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trigger_key', sa.String(length=128), nullable=True))
        batch_op.create_index('ux_runs_trigger_key', ['trigger_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ux_runs_trigger_key')
        batch_op.drop_column('trigger_key')
