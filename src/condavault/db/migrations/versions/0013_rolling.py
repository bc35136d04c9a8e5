"""rolling upgrade: jobs.heartbeat_at, when a running job's worker last renewed its lease

An additive, nullable column that only this version writes and reads: the previous version keeps running
against this schema during a rolling upgrade (it never names the column; its inserts leave it NULL).

Revision ID: 0013_rolling
Revises: 0012_index_scale
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_rolling"
down_revision = "0012_index_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("heartbeat_at", sa.Float(), nullable=True))  # no table rewrite


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
