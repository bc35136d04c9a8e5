"""Index state: dirty tracking, published pointers and shards (design.md §1.3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow


class SubdirState(Base):
    """One row per (channel, subdir).

    Writers bump ``change_seq`` (atomically, in SQL) and upsert their names into ``dirty_names`` in
    the same transaction as their record change; the indexer publishes and sets ``indexed_seq`` to the
    ``change_seq`` it saw. ``full_seq`` > ``indexed_seq`` asks for a full rebuild (patches changed,
    reindex, new subdir). The row lock taken by the increment serialises writers of one subdir.
    """

    __tablename__ = "subdir_states"
    __table_args__ = (UniqueConstraint("channel_id", "subdir", name="uq_subdir_states_channel_subdir"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    subdir: Mapped[str] = mapped_column(String(32))
    change_seq: Mapped[int] = mapped_column(BigInt, default=1)
    indexed_seq: Mapped[int] = mapped_column(BigInt, default=0)
    full_seq: Mapped[int] = mapped_column(BigInt, default=1)
    patch_instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublishedFile(Base):
    """The pointer from a served index path to its current content-addressed blob."""

    __tablename__ = "published_files"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    subdir: Mapped[str] = mapped_column(String(32), primary_key=True)  # "" for channel-level files
    path: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInt)
    content_type: Mapped[str] = mapped_column(String(100))
    revision: Mapped[int] = mapped_column(BigInt, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set for a subdir's plain JSON files (``repodata.json``, ``current_repodata.json``, ``run_exports.json``):
    # the blob of their ``.zst`` file, which the file is served decompressed from. ``size`` is then the
    # JSON's and ``sha256`` its ETag, ``indexing.buckets.plain_id(source_sha256)`` (no blob has that name).
    # None: ``sha256`` is the blob.
    source_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)


class ShardHead(Base):
    """The current shard of each package name in a subdir."""

    __tablename__ = "shard_heads"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    subdir: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))


class ShardBlob(Base):
    """Every shard a subdir ever published, kept ``shard_retention_days`` after it was superseded."""

    __tablename__ = "shard_blobs"
    __table_args__ = (Index("ix_shard_blobs_superseded", "superseded_at"),)

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    subdir: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInt)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DirtyName(Base):
    """A package name whose shard and repodata segment must be rebuilt, with the change that dirtied it."""

    __tablename__ = "dirty_names"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    subdir: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInt)


class SupersededBlob(Base):
    """An index blob (a published file or an expired shard) nothing should point at any more, and since
    when. Not a reference: the collector (:mod:`condavault.indexing.garbage`) deletes the blob through
    :meth:`~condavault.channels.blobs.BlobGuard.delete_if_unreferenced` once the retention has passed."""

    __tablename__ = "superseded_blobs"
    __table_args__ = (Index("ix_superseded_blobs_at", "superseded_at"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    superseded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
