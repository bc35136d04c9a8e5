"""dependants: the dependency names of every record (``record_depends``), filled from the stored records

The package page's and ``GET /api/channels/{name}/packages/{package}/dependants``'s list of dependants
is a lookup in this table instead of a scan of every record. The upgrade reads the stored records in
batches of 5,000 (by id) and writes their rows; new records get theirs when they are written.

Revision ID: 0014_dependants
Revises: 0013_object_storage
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014_dependants"
down_revision = "0013_object_storage"
branch_labels = None
depends_on = None

BATCH = 5000
_NAME_END = re.compile(r"[\s\[=<>!~,]")


def _rows(rid: int, channel_id: int, name: str, text: str) -> list[dict[str, Any]]:
    # the same rule as condavault.channels.depends.depends_rows (kept here: a migration does not follow code)
    try:
        record = json.loads(text)
    except ValueError:
        return []
    deps = record.get("depends") if isinstance(record, dict) else None
    if not isinstance(deps, list):
        return []
    out: dict[str, dict[str, Any]] = {}
    for spec in deps:
        if not isinstance(spec, str):
            continue
        dep = _NAME_END.split(spec.strip(), maxsplit=1)[0].rsplit("::", 1)[-1]
        if not dep or len(dep) > 100 or dep in out:
            continue
        out[dep] = {
            "record_id": rid,
            "name": dep,
            "channel_id": channel_id,
            "dependant": name[:100],
            "spec": spec.strip()[:500],
        }
    return list(out.values())


def upgrade() -> None:
    op.create_table(
        "record_depends",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("dependant", sa.String(100), nullable=False),
        sa.Column("spec", sa.String(500), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name="fk_record_depends_record_id_records", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("record_id", "name", name="pk_record_depends"),
    )
    op.create_index("ix_record_depends_name", "record_depends", ["name", "dependant", "channel_id"])
    bind = op.get_bind()
    records = sa.table(
        "records",
        sa.column("id", sa.Integer),
        sa.column("channel_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("record", sa.Text),
    )
    target = sa.table(
        "record_depends",
        sa.column("record_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("channel_id", sa.Integer),
        sa.column("dependant", sa.String),
        sa.column("spec", sa.String),
    )
    last = 0
    while True:
        batch = bind.execute(
            sa.select(records.c.id, records.c.channel_id, records.c.name, records.c.record)
            .where(records.c.id > last)
            .order_by(records.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            break
        last = batch[-1][0]
        rows = [r for rid, cid, name, text in batch for r in _rows(rid, cid, name, text)]
        if rows:
            bind.execute(target.insert(), rows)


def downgrade() -> None:
    op.drop_index("ix_record_depends_name", table_name="record_depends")
    op.drop_table("record_depends")
