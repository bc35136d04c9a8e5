"""search: package documents, files inside packages, name trigrams; FTS5 (SQLite) or pg_trgm (PostgreSQL)

The tables start empty: the search domain fills them from ``records`` (the ``search.reindex`` job, run
by ``condavault search --reindex`` and by the periodic sweep). Files inside packages already stored are
read back from their archives by that job.

Revision ID: 0008_search
Revises: 0007_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from condavault.db.base import BigInt

revision = "0008_search"
down_revision = "0007_jobs"
branch_labels = None
depends_on = None

FTS_TRIGGERS = [
    """CREATE TRIGGER search_packages_ai AFTER INSERT ON search_packages BEGIN
  INSERT INTO search_fts(rowid, name, summary, description, keywords)
  VALUES (new.id, new.name, new.summary, new.description, new.keywords);
END""",
    """CREATE TRIGGER search_packages_ad AFTER DELETE ON search_packages BEGIN
  INSERT INTO search_fts(search_fts, rowid, name, summary, description, keywords)
  VALUES ('delete', old.id, old.name, old.summary, old.description, old.keywords);
END""",
    """CREATE TRIGGER search_packages_au AFTER UPDATE OF name, summary, description, keywords ON search_packages BEGIN
  INSERT INTO search_fts(search_fts, rowid, name, summary, description, keywords)
  VALUES ('delete', old.id, old.name, old.summary, old.description, old.keywords);
  INSERT INTO search_fts(rowid, name, summary, description, keywords)
  VALUES (new.id, new.name, new.summary, new.description, new.keywords);
END""",
]


def upgrade() -> None:
    op.create_table(
        "search_packages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("license", sa.String(500), nullable=True),
        sa.Column("subdirs", sa.String(500), nullable=False),
        sa.Column("latest_version", sa.String(100), nullable=False),
        sa.Column("latest_id", sa.Integer(), nullable=True),
        sa.Column("latest_timestamp", BigInt, nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name="fk_search_packages_channel_id_channels", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_search_packages"),
        sa.UniqueConstraint("channel_id", "name", name="uq_search_packages_channel_name"),
    )
    op.create_index("ix_search_packages_name", "search_packages", ["name"])
    # MatchSpec, pkg: and package-page lookups go by name across channels
    op.create_index("ix_records_name", "records", ["name"])
    op.create_table(
        "search_files",
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("package_sha256", "path", name="pk_search_files"),
    )
    op.create_index("ix_search_files_path", "search_files", ["path"])
    op.create_index("ix_search_files_sha256", "search_files", ["sha256"])
    op.create_table(
        "search_trigrams",
        sa.Column("trigram", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("trigram", "name", name="pk_search_trigrams"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE search_fts USING fts5(name, summary, description, keywords, "
            "content='search_packages', content_rowid='id', tokenize='trigram')"
        )
        for trigger in FTS_TRIGGERS:
            op.execute(trigger)
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_search_packages_name_trgm ON search_packages USING gin (name gin_trgm_ops)")
        op.execute("CREATE INDEX ix_search_packages_name_prefix ON search_packages (name text_pattern_ops)")
        op.execute(
            "CREATE INDEX ix_search_packages_tsv ON search_packages USING gin ("
            "to_tsvector('simple', name || ' ' || summary || ' ' || keywords || ' ' || description))"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for t in ("search_packages_ai", "search_packages_ad", "search_packages_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {t}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_index("ix_records_name", table_name="records")
    op.drop_table("search_trigrams")
    op.drop_table("search_files")
    op.drop_table("search_packages")
