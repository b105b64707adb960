"""log chunks: a live run's log is stored a batch per row, and sealed in chunks

Revision ID: 0004
Revises: 0003

Lines of live runs move from log_lines (a row per line) into log_chunks (a
row per block of lines a worker sent, joined by newlines); runs.log_seq keeps
the last line stored, runs.log_index the first line of each sealed blob.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('log_chunks',
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('first_seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'first_seq')
    )
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('log_seq', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('log_index', sa.JSON(), nullable=True))
    conn = op.get_bind()
    insert = sa.text("INSERT INTO log_chunks (run_id, first_seq, last_seq, ts, body) "
                     "VALUES (:run_id, :seq, :seq, :ts, :msg)")
    last: dict[str, int] = {}
    for row in conn.execute(sa.text("SELECT run_id, seq, ts, msg FROM log_lines ORDER BY run_id, seq")):
        conn.execute(insert, {"run_id": row.run_id, "seq": row.seq, "ts": row.ts,
                              "msg": row.msg.replace("\n", " ")})
        last[row.run_id] = row.seq
    for run_id, seq in last.items():
        conn.execute(sa.text("UPDATE runs SET log_seq = :seq WHERE id = :run_id"), {"run_id": run_id, "seq": seq})
    op.drop_table('log_lines')


def downgrade() -> None:
    op.create_table('log_lines',
    sa.Column('run_id', sa.String(length=26), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('msg', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'seq')
    )
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('log_index')
        batch.drop_column('log_seq')
    op.drop_table('log_chunks')
