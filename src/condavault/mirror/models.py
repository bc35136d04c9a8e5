"""Mirror tables: the mirror itself, its runs, and the persisted plan (one decision per upstream file).

``MirrorItem`` is both the explanation ("why is X missing?") and the to-do list of a run: kept files
carry a ``state`` (``pending`` -> ``done`` | ``failed``; ``passive`` for metadata-only records whose
bytes are fetched on first request). A rerun skips ``done`` items whose sha256 still matches.
The mirror row doubles as the run lease (``lease_holder``/``lease_until``), so two processes can
never run one mirror at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow


class Mirror(Base):
    __tablename__ = "mirrors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(16), default="active")
    cron: Mapped[str | None] = mapped_column(String(100), nullable=True)
    config: Mapped[str] = mapped_column(Text)  # MirrorConfig as JSON (secrets included)
    config_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)


class MirrorRun(Base):
    __tablename__ = "mirror_runs"
    __table_args__ = (Index("ix_mirror_runs_mirror_id_id", "mirror_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror_id: Mapped[int] = mapped_column(ForeignKey("mirrors.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(
        String(16), default="pending"
    )  # pending|planning|running|completed|failed|cancelled
    phase: Mapped[str] = mapped_column(String(32), default="")
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    plan_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    apply_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_items: Mapped[int] = mapped_column(Integer, default=0)
    done_items: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInt, default=0)
    done_bytes: Mapped[int] = mapped_column(BigInt, default=0)
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failures: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {file, code, message}
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the durable job that runs it


class MirrorItem(Base):
    __tablename__ = "mirror_items"
    __table_args__ = (
        UniqueConstraint("mirror_id", "subdir", "filename", name="uq_mirror_items_mirror_subdir_filename"),
        Index("ix_mirror_items_mirror_name", "mirror_id", "name"),
        Index("ix_mirror_items_mirror_state", "mirror_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror_id: Mapped[int] = mapped_column(ForeignKey("mirrors.id", ondelete="CASCADE"))
    subdir: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    kept: Mapped[bool] = mapped_column(Boolean)
    flag: Mapped[bool] = mapped_column(Boolean, default=False)
    filter: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[str] = mapped_column(Text, default="")
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    record_hash: Mapped[str | None] = mapped_column(String(40), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed|passive|dropped
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    fetch_until: Mapped[float] = mapped_column(Float, default=0.0)  # passive single-flight lease
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
