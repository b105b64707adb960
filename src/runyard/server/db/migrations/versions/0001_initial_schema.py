"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('log_lines',
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('msg', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'seq')
    )
    op.create_table('pools',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('certificate_serial', sa.String(length=64), nullable=False),
    sa.Column('drift_detection_limit', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('stacks',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('pool_id', sa.String(length=26), nullable=False),
    sa.Column('source', sa.JSON(), nullable=False),
    sa.Column('project_root', sa.String(length=500), nullable=False),
    sa.Column('tool', sa.String(length=32), nullable=False),
    sa.Column('runner_image', sa.String(length=300), nullable=False),
    sa.Column('commands', sa.JSON(), nullable=False),
    sa.Column('env', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('autodeploy', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('workers',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('pool_id', sa.String(length=26), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('drained', sa.Boolean(), nullable=False),
    sa.Column('current_run_id', sa.String(length=26), nullable=True),
    sa.Column('certificate_serial', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('registration_nonce', sa.String(length=512), nullable=False),
    sa.Column('exit_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('last_seen_at', sa.Float(), nullable=False),
    sa.Column('gone_at', sa.Float(), nullable=True),
    sa.Column('gone_reason', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('registration_nonce'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index('ix_workers_pool_alive', ['pool_id', 'gone_at'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('stack_id', sa.String(length=26), nullable=False),
    sa.Column('pool_id', sa.String(length=26), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('worker_id', sa.String(length=26), nullable=True),
    sa.Column('lease', sa.Integer(), nullable=False),
    sa.Column('stop_requested', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('log_sealed', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], ),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_pool_state', ['pool_id', 'state'], unique=False)
        batch_op.create_index('ix_runs_stack', ['stack_id', 'created_at'], unique=False)

    op.create_table('run_transitions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('run_transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_transitions_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('run_transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_transitions_run_id'))

    op.drop_table('run_transitions')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_stack')
        batch_op.drop_index('ix_runs_pool_state')

    op.drop_table('runs')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index('ix_workers_pool_alive')

    op.drop_table('workers')
    op.drop_table('stacks')
    op.drop_table('settings')
    op.drop_table('pools')
    op.drop_table('log_lines')
    op.drop_table('api_keys')
