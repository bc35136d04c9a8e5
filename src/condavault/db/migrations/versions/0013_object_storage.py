"""object storage / several machines: secrets shared through the database (session secret, signing key)

Revision ID: 0013_object_storage
Revises: 0012_index_scale
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import UTCDateTime

revision = "0013_object_storage"
down_revision = "0012_index_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a new table only: the previous version's code runs unchanged against it (rolling upgrade)
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
