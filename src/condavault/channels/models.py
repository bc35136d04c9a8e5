"""Channels and the records table: the source of truth (design.md §1.2)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow


class Channel(Base):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    privacy: Mapped[str] = mapped_column(String(20), default="public")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Record(Base):
    """One package file in one channel subdir.

    ``record`` holds the canonical, unpatched repodata record (index.json fields + md5/sha256/size);
    ``fragment`` holds the published JSON text of the *patched* record (``"<fn>":{...}``) so the
    monolithic repodata is a concatenation. ``has_blob`` is false for metadata-only records
    (imported repodata, passive mirrors) whose bytes have not been fetched yet.
    """

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("channel_id", "subdir", "filename", name="uq_records_channel_subdir_filename"),
        Index("ix_records_channel_subdir_name", "channel_id", "subdir", "name"),
        Index("ix_records_sha256", "sha256"),
        Index("ix_records_name", "name"),  # search (migration 0008_search)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    subdir: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    build: Mapped[str] = mapped_column(String(200))
    build_number: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    timestamp: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    license: Mapped[str | None] = mapped_column(String(500), nullable=True)
    record: Mapped[str] = mapped_column(Text)
    fragment: Mapped[str] = mapped_column(Text, default="")
    about: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_exports: Mapped[str | None] = mapped_column(Text, nullable=True)
    paths_summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    indexed_timestamp: Mapped[int] = mapped_column(BigInt)
    has_blob: Mapped[bool] = mapped_column(Boolean, default=True)
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    uploaded_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class BlobPin(Base):
    """A blob an ingest is about to reference (written before its blob, deleted with its row's commit).

    Deleting a blob (a failed ingest cleaning up, ``check --repair``) re-checks, under a lock, that no
    record, index pointer or pin references it, so a concurrent ingest of the same bytes never loses
    its blob (``channels.blobs``)."""

    __tablename__ = "blob_pins"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UploadBatch(Base):
    """An upload batch: files uploaded by any number of requests (in parallel, several per request) whose
    channel index is published once, when the batch is committed (or when it expires)."""

    __tablename__ = "upload_batches"
    __table_args__ = (Index("ix_upload_batches_channel", "channel_id", "state"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="open")  # open | committed
    subdirs: Mapped[str] = mapped_column(Text, default="")  # space separated: the subdirs it touched
    counts: Mapped[str] = mapped_column(Text, default="{}")
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)  # unix seconds; renewed by every request
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RecordDepends(Base):
    """The package names a record's ``depends`` names (one row per record and name): the index behind a
    package's *dependants* (``channels.depends``). Written with the record by ``channels.records`` (the only
    writer of records), gone with it (cascade). ``channel_id`` and ``dependant`` (the record's own name)
    are copies of the record's, so "who depends on X in these channels" is one index range."""

    __tablename__ = "record_depends"
    __table_args__ = (Index("ix_record_depends_name", "name", "dependant", "channel_id"),)

    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel_id: Mapped[int] = mapped_column(Integer)
    dependant: Mapped[str] = mapped_column(String(100))
    spec: Mapped[str] = mapped_column(String(500))
