"""scanning: verdicts, quarantined files, blocked hashes, channel policies, rescan state

Revision ID: 0010_scanning
Revises: 0009_bundles
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0010_scanning"
down_revision = "0009_bundles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_verdicts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(200), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("ruleset", sa.String(64), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("scanned_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "quarantined_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("channel_id", sa.Integer(), sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subdir", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", BigInt, nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("extra", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(200), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("ruleset", sa.String(64), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("uploaded_by", sa.String(200), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("channel_id", "subdir", "filename", name="uq_quarantined_files_channel_id"),
    )
    op.create_index("ix_quarantined_files_sha256", "quarantined_files", ["sha256"])
    op.create_table(
        "blocked_hashes",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("added_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "scan_channel_policies",
        sa.Column("channel_id", sa.Integer(), sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("quarantine_suspicious", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "scan_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scan_state")
    op.drop_table("scan_channel_policies")
    op.drop_table("blocked_hashes")
    op.drop_index("ix_quarantined_files_sha256", table_name="quarantined_files")
    op.drop_table("quarantined_files")
    op.drop_table("scan_verdicts")
