"""signatures: carried upstream signatures, attestation sidecars and verification outcomes per record

Revision ID: 0011_signatures
Revises: 0010_scanning
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0011_signatures"
down_revision = "0010_scanning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_trust",
        sa.Column("record_id", sa.Integer(), sa.ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("signatures", sa.Text(), nullable=True),
        sa.Column("signed_record", sa.Text(), nullable=True),
        sa.Column("fragment_digest", sa.String(64), nullable=True),
        sa.Column("sidecar_sha256", sa.String(64), nullable=True),
        sa.Column("sidecar_size", BigInt, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("method", sa.String(40), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("checked_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_record_trust_sidecar_sha256", "record_trust", ["sidecar_sha256"])


def downgrade() -> None:
    op.drop_index("ix_record_trust_sidecar_sha256", table_name="record_trust")
    op.drop_table("record_trust")
