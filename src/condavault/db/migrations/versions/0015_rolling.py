"""rolling upgrade: jobs.heartbeat_at, when a running job's worker last renewed its lease

An additive, nullable column that only this version writes and reads: the previous version keeps running
against this schema during a rolling upgrade (it never names the column; its inserts leave it NULL).

Revision ID: 0015_rolling
Revises: 0014_dependants
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_rolling"
down_revision = "0014_dependants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("heartbeat_at", sa.Float(), nullable=True))  # no table rewrite


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
