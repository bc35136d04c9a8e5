"""vulns: advisories, ids, names, links, rules, curation events, risk cache, sources

Revision ID: 0004_vulns
Revises: 0003_mirror
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0004_vulns"
down_revision = "0003_mirror"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vuln_advisories",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_id", sa.String(100), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=True),
        sa.Column("published", sa.String(40), nullable=True),
        sa.Column("modified", sa.String(40), nullable=True),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_advisories"),
        sa.UniqueConstraint("advisory_id", name="uq_vuln_advisories_advisory_id"),
    )
    op.create_table(
        "vuln_advisory_ids",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_pk", sa.Integer(), nullable=False),
        sa.Column("ident", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_pk"],
            ["vuln_advisories.id"],
            ondelete="CASCADE",
            name="fk_vuln_advisory_ids_advisory_pk_vuln_advisories",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_advisory_ids"),
        sa.UniqueConstraint("advisory_pk", "ident", name="uq_vuln_advisory_ids_advisory_pk"),
    )
    op.create_index("ix_vuln_advisory_ids_ident", "vuln_advisory_ids", ["ident"])
    op.create_table(
        "vuln_advisory_names",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_pk"],
            ["vuln_advisories.id"],
            ondelete="CASCADE",
            name="fk_vuln_advisory_names_advisory_pk_vuln_advisories",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_advisory_names"),
        sa.UniqueConstraint("advisory_pk", "name", name="uq_vuln_advisory_names_advisory_pk"),
    )
    op.create_index("ix_vuln_advisory_names_name", "vuln_advisory_names", ["name"])
    op.create_table(
        "vuln_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_pk", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("curated_by", sa.String(10), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("matched_by", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_pk"],
            ["vuln_advisories.id"],
            ondelete="CASCADE",
            name="fk_vuln_links_advisory_pk_vuln_advisories",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], ondelete="CASCADE", name="fk_vuln_links_record_id_records"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_links"),
        sa.UniqueConstraint("advisory_pk", "record_id", name="uq_vuln_links_advisory_pk"),
    )
    op.create_index("ix_vuln_links_record_id", "vuln_links", ["record_id"])
    op.create_table(
        "vuln_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_pk", sa.Integer(), nullable=False),
        sa.Column("package", sa.String(100), nullable=False),
        sa.Column("versions", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["advisory_pk"],
            ["vuln_advisories.id"],
            ondelete="CASCADE",
            name="fk_vuln_rules_advisory_pk_vuln_advisories",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_rules"),
    )
    op.create_index("ix_vuln_rules_advisory_pk_package", "vuln_rules", ["advisory_pk", "package"])
    op.create_table(
        "vuln_curation_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("advisory_id", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("before", sa.String(20), nullable=True),
        sa.Column("after", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_curation_events"),
    )
    op.create_index("ix_vuln_curation_events_advisory_id", "vuln_curation_events", ["advisory_id"])
    op.create_table(
        "vuln_record_state",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("matched_at", UTCDateTime(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=True),
        sa.Column("risk_via", sa.String(300), nullable=True),
        sa.Column("security", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], ondelete="CASCADE", name="fk_vuln_record_state_record_id_records"
        ),
        sa.PrimaryKeyConstraint("record_id", name="pk_vuln_record_state"),
    )
    op.create_index("ix_vuln_record_state_channel_id", "vuln_record_state", ["channel_id"])
    op.create_table(
        "vuln_channel_risk",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], ondelete="CASCADE", name="fk_vuln_channel_risk_channel_id_channels"
        ),
        sa.PrimaryKeyConstraint("channel_id", name="pk_vuln_channel_risk"),
    )
    op.create_table(
        "vuln_sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("location", sa.String(1000), nullable=False),
        sa.Column("etag", sa.String(500), nullable=True),
        sa.Column("last_modified", sa.String(100), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("last_run", UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.Text(), nullable=False),
        sa.Column("advisories", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_sources"),
        sa.UniqueConstraint("location", name="uq_vuln_sources_location"),
    )
    op.create_table(
        "vuln_meta",
        sa.Column("key", sa.String(50), nullable=False),
        sa.Column("value", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_vuln_meta"),
    )
    meta = sa.table("vuln_meta", sa.column("key", sa.String), sa.column("value", BigInt))
    op.bulk_insert(meta, [{"key": "generation", "value": 0}])


def downgrade() -> None:
    for index, table in (
        ("ix_vuln_record_state_channel_id", "vuln_record_state"),
        ("ix_vuln_curation_events_advisory_id", "vuln_curation_events"),
        ("ix_vuln_rules_advisory_pk_package", "vuln_rules"),
        ("ix_vuln_links_record_id", "vuln_links"),
        ("ix_vuln_advisory_names_name", "vuln_advisory_names"),
        ("ix_vuln_advisory_ids_ident", "vuln_advisory_ids"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "vuln_meta",
        "vuln_sources",
        "vuln_channel_risk",
        "vuln_record_state",
        "vuln_curation_events",
        "vuln_rules",
        "vuln_links",
        "vuln_advisory_names",
        "vuln_advisory_ids",
        "vuln_advisories",
    ):
        op.drop_table(table)
