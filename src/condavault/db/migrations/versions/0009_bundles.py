"""bundles: air-gap bundle exports, imports and per-channel import state

Revision ID: 0009_bundles
Revises: 0008_search
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0009_bundles"
down_revision = "0008_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_exports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("serial", BigInt, nullable=False),
        sa.Column("kinds", sa.String(200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("toc", sa.LargeBinary(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("bundle_id", name="uq_bundle_exports_bundle_id"),
    )
    op.create_table(
        "bundle_imports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("origin_key", sa.String(32), nullable=False),
        sa.Column("serial", BigInt, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("bundle_id", name="uq_bundle_imports_bundle_id"),
    )
    op.create_table(
        "bundle_channel_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("origin_key", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("serial", BigInt, nullable=False),
        sa.Column("watermark", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("origin_key", "target", name="uq_bundle_channel_states_origin_key"),
    )


def downgrade() -> None:
    op.drop_table("bundle_channel_states")
    op.drop_table("bundle_imports")
    op.drop_table("bundle_exports")
