"""terraform state, outputs, workspaces, hooks, drift

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stack_outputs',
    sa.Column('stack_id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('sealed', sa.Text(), nullable=True),
    sa.Column('sensitive', sa.Boolean(), nullable=False),
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], ),
    sa.PrimaryKeyConstraint('stack_id', 'name')
    )
    op.create_table('state_locks',
    sa.Column('stack_id', sa.String(length=26), nullable=False),
    sa.Column('lock_id', sa.String(length=200), nullable=False),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], ),
    sa.PrimaryKeyConstraint('stack_id')
    )
    op.create_table('state_versions',
    sa.Column('stack_id', sa.String(length=26), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('serial', sa.Integer(), nullable=False),
    sa.Column('lineage', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=26), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], ),
    sa.PrimaryKeyConstraint('stack_id', 'version')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_token_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('changes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('has_workspace', sa.Boolean(), server_default='0', nullable=False))

    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hooks', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('drift_schedule', sa.String(length=100), server_default='', nullable=False))
        batch_op.add_column(sa.Column('drift_checked_at', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.drop_column('drift_checked_at')
        batch_op.drop_column('drift_schedule')
        batch_op.drop_column('hooks')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('has_workspace')
        batch_op.drop_column('changes')
        batch_op.drop_column('run_token_hash')

    op.drop_table('state_versions')
    op.drop_table('state_locks')
    op.drop_table('stack_outputs')
