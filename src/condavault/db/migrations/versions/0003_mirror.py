"""mirror: mirrors, their runs and the persisted plan (one decision per upstream file)

Revision ID: 0003_mirror
Revises: 0002_auth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import condavault.db.base

revision = "0003_mirror"
down_revision = "0002_auth"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.BigInteger(), "postgresql")


def _dt() -> condavault.db.base.UTCDateTime:
    return condavault.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mirrors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _dt(), nullable=False),
        sa.Column("updated_at", _dt(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("lease_holder", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_mirrors_channel_id_channels"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirrors")),
        sa.UniqueConstraint("name", name=op.f("uq_mirrors_name")),
    )
    op.create_index(op.f("ix_mirrors_channel_id"), "mirrors", ["channel_id"], unique=False)
    op.create_table(
        "mirror_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("subdir", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kept", sa.Boolean(), nullable=False),
        sa.Column("flag", sa.Boolean(), nullable=False),
        sa.Column("filter", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", BIG, nullable=True),
        sa.Column("record_hash", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fetch_until", sa.Float(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", _dt(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mirror_id"], ["mirrors.id"], name=op.f("fk_mirror_items_mirror_id_mirrors"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_items")),
        sa.UniqueConstraint("mirror_id", "subdir", "filename", name="uq_mirror_items_mirror_subdir_filename"),
    )
    op.create_index("ix_mirror_items_mirror_name", "mirror_items", ["mirror_id", "name"], unique=False)
    op.create_index("ix_mirror_items_mirror_state", "mirror_items", ["mirror_id", "state"], unique=False)
    op.create_table(
        "mirror_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("started_at", _dt(), nullable=False),
        sa.Column("finished_at", _dt(), nullable=True),
        sa.Column("plan_seconds", sa.Float(), nullable=True),
        sa.Column("apply_seconds", sa.Float(), nullable=True),
        sa.Column("total_items", sa.Integer(), nullable=False),
        sa.Column("done_items", sa.Integer(), nullable=False),
        sa.Column("total_bytes", BIG, nullable=False),
        sa.Column("done_bytes", BIG, nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mirror_id"], ["mirrors.id"], name=op.f("fk_mirror_runs_mirror_id_mirrors"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_runs")),
    )
    op.create_index("ix_mirror_runs_mirror_id_id", "mirror_runs", ["mirror_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_mirror_runs_mirror_id_id", table_name="mirror_runs")
    op.drop_table("mirror_runs")
    op.drop_index("ix_mirror_items_mirror_state", table_name="mirror_items")
    op.drop_index("ix_mirror_items_mirror_name", table_name="mirror_items")
    op.drop_table("mirror_items")
    op.drop_index(op.f("ix_mirrors_channel_id"), table_name="mirrors")
    op.drop_table("mirrors")
