"""jobs: the durable job queue and its schedules, blob pins, upload batches, mirror_runs.job_id

Revision ID: 0007_jobs
Revises: 0004_vulns
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0007_jobs"
down_revision = "0005_vuln_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("lane", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=True),
        sa.Column("lock_key", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(200), nullable=False),
        sa.Column("done", BigInt, nullable=False),
        sa.Column("total", BigInt, nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("schedule", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["state", "run_after"])
    op.create_index("ix_jobs_kind", "jobs", ["kind", "id"])
    op.create_index(
        "uq_jobs_dedupe_queued",
        "jobs",
        ["dedupe_key"],
        unique=True,
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "uq_jobs_lock_running",
        "jobs",
        ["lock_key"],
        unique=True,
        sqlite_where=sa.text("state = 'running'"),
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_table(
        "job_schedules",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("cron", sa.String(100), nullable=True),
        sa.Column("every_seconds", sa.Float(), nullable=True),
        sa.Column("lock_key", sa.String(200), nullable=True),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("last_fired_at", sa.Float(), nullable=True),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(20), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_schedules"),
    )
    op.create_table(
        "blob_pins",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "holder", name="pk_blob_pins"),
    )
    op.create_table(
        "upload_batches",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("subdirs", sa.Text(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("committed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], ondelete="CASCADE", name="fk_upload_batches_channel_id_channels"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_upload_batches"),
    )
    op.create_index("ix_upload_batches_channel", "upload_batches", ["channel_id", "state"])
    with op.batch_alter_table("mirror_runs") as batch:
        batch.add_column(sa.Column("job_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mirror_runs") as batch:
        batch.drop_column("job_id")
    op.drop_index("ix_upload_batches_channel", table_name="upload_batches")
    op.drop_table("upload_batches")
    op.drop_table("blob_pins")
    op.drop_table("job_schedules")
    op.drop_index("uq_jobs_lock_running", table_name="jobs")
    op.drop_index("uq_jobs_dedupe_queued", table_name="jobs")
    op.drop_index("ix_jobs_kind", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
