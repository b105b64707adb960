"""log chunks: a live run's log is stored a batch per row, and sealed in chunks

Revision ID: 0004
Revises: 0003

Lines of live runs move from log_lines (a row per line) into log_chunks (a
row per batch a worker sent, as JSON lines); runs.log_seq keeps the last
line stored, runs.log_index the first line of each sealed chunk blob.
"""

import json
from itertools import groupby

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
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'first_seq')
    )
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('log_seq', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('log_index', sa.JSON(), nullable=True))
    conn = op.get_bind()
    lines = conn.execute(sa.text("SELECT run_id, seq, ts, msg FROM log_lines ORDER BY run_id, seq"))
    for run_id, rows in groupby(lines, key=lambda r: r.run_id):
        got = list(rows)
        body = "".join(json.dumps({"seq": r.seq, "ts": r.ts, "msg": r.msg}) + "\n" for r in got)
        conn.execute(sa.text("INSERT INTO log_chunks (run_id, first_seq, last_seq, body) "
                             "VALUES (:run_id, :first, :last, :body)"),
                     {"run_id": run_id, "first": got[0].seq, "last": got[-1].seq, "body": body})
        conn.execute(sa.text("UPDATE runs SET log_seq = :last WHERE id = :run_id"),
                     {"run_id": run_id, "last": got[-1].seq})
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
