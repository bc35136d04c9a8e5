"""vulns: per-source records and the alias graph, name mapping entries, effective scores, link match kinds

Advisories stored before this revision become records of a ``legacy:0004`` source (feed ``legacy``):
they keep being served until a sync brings real records of the same advisory, which then replace them
in the merged view (``vulns/merge.py``).

Revision ID: 0005_vuln_sources
Revises: 0004_vulns
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt, UTCDateTime

revision = "0005_vuln_sources"
down_revision = "0004_vulns"
branch_labels = None
depends_on = None

LEGACY_SOURCE = "legacy:0004"


def upgrade() -> None:
    with op.batch_alter_table("vuln_advisories", schema=None) as batch:
        batch.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("score_version", sa.String(10), nullable=True))
        batch.add_column(sa.Column("score_source", sa.String(200), nullable=True))
        batch.add_column(sa.Column("match_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("vuln_advisory_names", schema=None) as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="direct"))
    with op.batch_alter_table("vuln_links", schema=None) as batch:
        batch.add_column(sa.Column("match_kind", sa.String(10), nullable=False, server_default="direct"))
    with op.batch_alter_table("vuln_sources", schema=None) as batch:
        batch.add_column(sa.Column("names", BigInt, nullable=False, server_default="0"))
    op.create_table(
        "vuln_source_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_pk", sa.Integer(), nullable=False),
        sa.Column("feed", sa.String(20), nullable=False),
        sa.Column("record_id", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("modified", sa.String(40), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("group_pk", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_pk"], ["vuln_sources.id"], ondelete="CASCADE", name="fk_vuln_source_records_source_pk_vuln_sources"
        ),
        sa.ForeignKeyConstraint(
            ["group_pk"],
            ["vuln_advisories.id"],
            ondelete="SET NULL",
            name="fk_vuln_source_records_group_pk_vuln_advisories",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_source_records"),
        sa.UniqueConstraint("source_pk", "feed", "record_id", name="uq_vuln_source_records_source_pk"),
    )
    op.create_index("ix_vuln_source_records_group_pk", "vuln_source_records", ["group_pk"])
    op.create_table(
        "vuln_record_idents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("record_pk", sa.Integer(), nullable=False),
        sa.Column("ident", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_pk"],
            ["vuln_source_records.id"],
            ondelete="CASCADE",
            name="fk_vuln_record_idents_record_pk_vuln_source_records",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_record_idents"),
        sa.UniqueConstraint("record_pk", "ident", name="uq_vuln_record_idents_record_pk"),
    )
    op.create_index("ix_vuln_record_idents_ident", "vuln_record_idents", ["ident"])
    op.create_table(
        "vuln_name_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_pk", sa.Integer(), nullable=False),
        sa.Column("ecosystem", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("conda_name", sa.String(200), nullable=False),
        sa.Column("relation", sa.String(10), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_pk"], ["vuln_sources.id"], ondelete="CASCADE", name="fk_vuln_name_entries_source_pk_vuln_sources"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vuln_name_entries"),
        sa.UniqueConstraint("source_pk", "ecosystem", "name", "conda_name", name="uq_vuln_name_entries_source_pk"),
    )
    op.create_index("ix_vuln_name_entries_name", "vuln_name_entries", ["name"])
    _legacy_records()


def _legacy_records() -> None:
    """Existing merged advisories become records of one legacy source (see the module docstring)."""
    conn = op.get_bind()
    advisories = sa.table(
        "vuln_advisories",
        sa.column("id", sa.Integer),
        sa.column("advisory_id", sa.String),
        sa.column("content_hash", sa.String),
        sa.column("modified", sa.String),
        sa.column("data", sa.Text),
    )
    rows = conn.execute(
        sa.select(
            advisories.c.id,
            advisories.c.advisory_id,
            advisories.c.content_hash,
            advisories.c.modified,
            advisories.c.data,
        ).order_by(advisories.c.id)
    ).all()
    if not rows:
        return
    now = datetime.now(UTC)
    sources = sa.table(
        "vuln_sources",
        sa.column("id", sa.Integer),
        sa.column("location", sa.String),
        sa.column("last_status", sa.Text),
        sa.column("advisories", BigInt),
        sa.column("names", BigInt),
        sa.column("last_run", UTCDateTime),
    )
    conn.execute(
        sources.insert().values(
            location=LEGACY_SOURCE, last_status="migrated from 0004", advisories=len(rows), names=0, last_run=now
        )
    )
    source_pk = conn.execute(sa.select(sources.c.id).where(sources.c.location == LEGACY_SOURCE)).scalar_one()
    records = sa.table(
        "vuln_source_records",
        sa.column("id", sa.Integer),
        sa.column("source_pk", sa.Integer),
        sa.column("feed", sa.String),
        sa.column("record_id", sa.String),
        sa.column("content_hash", sa.String),
        sa.column("modified", sa.String),
        sa.column("data", sa.Text),
        sa.column("group_pk", sa.Integer),
        sa.column("updated_at", UTCDateTime),
    )
    idents = sa.table("vuln_record_idents", sa.column("record_pk", sa.Integer), sa.column("ident", sa.String))
    for start in range(0, len(rows), 500):
        part = rows[start : start + 500]
        conn.execute(
            records.insert(),
            [
                {
                    "source_pk": source_pk,
                    "feed": "legacy",
                    "record_id": aid,
                    "content_hash": h,
                    "modified": (modified or "")[:40],
                    "data": _legacy_data(data),
                    "group_pk": pk,
                    "updated_at": now,
                }
                for pk, aid, h, modified, data in part
            ],
        )
        pks = dict(
            conn.execute(
                sa.select(records.c.record_id, records.c.id).where(
                    records.c.source_pk == source_pk, records.c.record_id.in_([r[1] for r in part])
                )
            ).all()
        )
        ident_rows = []
        for _pk, aid, _h, _m, data in part:
            doc = json.loads(data)
            for ident in sorted({str(i).strip().upper()[:100] for i in [aid, *doc.get("aliases", [])] if i}):
                ident_rows.append({"record_pk": pks[aid], "ident": ident})
        if ident_rows:
            conn.execute(idents.insert(), ident_rows)


def _legacy_data(data: str) -> str:
    doc = json.loads(data)
    doc["sources"] = ["legacy"]
    for affected in doc.get("affected", []):
        affected["source"] = "legacy"
    return json.dumps(doc, sort_keys=True)


def downgrade() -> None:
    op.drop_index("ix_vuln_name_entries_name", table_name="vuln_name_entries")
    op.drop_table("vuln_name_entries")
    op.drop_index("ix_vuln_record_idents_ident", table_name="vuln_record_idents")
    op.drop_table("vuln_record_idents")
    op.drop_index("ix_vuln_source_records_group_pk", table_name="vuln_source_records")
    op.drop_table("vuln_source_records")
    op.execute(sa.text(f"DELETE FROM vuln_sources WHERE location = '{LEGACY_SOURCE}'"))
    with op.batch_alter_table("vuln_sources", schema=None) as batch:
        batch.drop_column("names")
    with op.batch_alter_table("vuln_links", schema=None) as batch:
        batch.drop_column("match_kind")
    with op.batch_alter_table("vuln_advisory_names", schema=None) as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("vuln_advisories", schema=None) as batch:
        batch.drop_column("match_pending")
        batch.drop_column("score_source")
        batch.drop_column("score_version")
        batch.drop_column("score")
