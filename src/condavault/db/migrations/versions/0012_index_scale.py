"""index scale: superseded index blobs, collected by the server after a retention

Revision ID: 0012_index_scale
Revises: 0011_signatures
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import UTCDateTime

revision = "0012_index_scale"
down_revision = "0011_signatures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "superseded_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("superseded_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_superseded_blobs_at", "superseded_blobs", ["superseded_at"])


def downgrade() -> None:
    op.drop_index("ix_superseded_blobs_at", table_name="superseded_blobs")
    op.drop_table("superseded_blobs")
