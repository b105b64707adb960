"""revoked sessions: signing out of the web UI ends the session on every server

Revision ID: 0007
Revises: 0006

A session is a signed cookie; signing out used to delete the browser's copy
only, so a copied cookie stayed good until it expired (12 hours).
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'revoked_sessions',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_revoked_sessions_expires_at', 'revoked_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_revoked_sessions_expires_at', table_name='revoked_sessions')
    op.drop_table('revoked_sessions')
