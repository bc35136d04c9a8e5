"""The search tables (derived from ``records``; rebuilt by ``search.reindex``).

* ``search_packages``: one document per (channel, name) -- the text a free-text query matches (name,
  summary, description, keywords) and what a text result shows without touching ``records``.
* ``search_files``: the files inside a package, keyed by the package's sha256 (content-addressed like the
  blobs: the same bytes in ten channels list their files once), from ``info/paths.json`` (or
  ``info/files``) at ingest. Records whose archive is not stored (passive mirror metadata) have none.
* ``search_trigrams``: the trigrams of every distinct indexed name, for names containing a word,
  typo-tolerant matching and "did you mean" (the same on both databases: a few rows per distinct name,
  far fewer than documents). (``ix_search_packages_name_trgm``, PostgreSQL's ``pg_trgm`` index on the
  documents' names, existed until migration ``0016_search_speed``; its name stays listed below.)

Backend-specific objects live only in the migration and are named in :data:`UNMANAGED`: the SQLite FTS5
table ``search_fts`` (trigram tokenizer, kept in sync by triggers), PostgreSQL's generated column
``search_packages.search_tsv`` (the document's tsvector, stored when the row is written) and GIN indexes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt

# objects only the migration knows (FTS5 and its shadow tables, expression/GIN indexes)
UNMANAGED = frozenset(
    {
        "search_fts",
        "search_fts_data",
        "search_fts_idx",
        "search_fts_content",
        "search_fts_docsize",
        "search_fts_config",
        "ix_search_packages_name_trgm",
        "ix_search_packages_name_prefix",
        "ix_search_packages_tsv",
        "search_tsv",  # PostgreSQL: the stored tsvector of a document (migration 0017_search_tsv)
    }
)


class SearchPackage(Base):
    __tablename__ = "search_packages"
    __table_args__ = (
        UniqueConstraint("channel_id", "name", name="uq_search_packages_channel_name"),
        Index("ix_search_packages_name", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str | None] = mapped_column(String(500), nullable=True)  # of the latest record
    subdirs: Mapped[str] = mapped_column(String(500), default="")  # " linux-64 noarch " (space-delimited)
    latest_version: Mapped[str] = mapped_column(String(100), default="")
    latest_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # records.id of the newest build
    latest_timestamp: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    records: Mapped[int] = mapped_column(Integer, default=0)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")  # count:max(id):sum(id) of its records
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)  # refreshed at sync (facets)


class SearchFile(Base):
    __tablename__ = "search_files"
    __table_args__ = (
        Index("ix_search_files_path", "path"),
        Index("ix_search_files_sha256", "sha256"),
    )

    package_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger().with_variant(BigInteger(), "postgresql"), nullable=True)


class SearchTrigram(Base):
    __tablename__ = "search_trigrams"

    trigram: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
