"""derived json: a subdir's plain JSON index files are served decompressed from their ``.zst`` blob

Each publish wrote ``repodata.json`` (103 MB at 300 k records), ``current_repodata.json`` and
``run_exports.json`` in full beside their ``.zst`` files, which hold the same bytes. Now their pointers name
the ``.zst`` blob in ``source_sha256`` (``size`` stays the JSON's; ``sha256``, the ETag, is derived from the
``.zst`` blob's) and the file is decompressed as it is sent. Additive: processes of the previous version
answer 404 for a plain JSON file published by the new version (no blob has that sha256) until they are
replaced; ``.zst`` files and shards are unaffected.

Revision ID: 0018_derived_json
Revises: 0017_search_tsv
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_derived_json"
down_revision = "0017_search_tsv"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("published_files", sa.Column("source_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("published_files") as batch:
        batch.drop_column("source_sha256")
