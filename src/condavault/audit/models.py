"""Audit events: package downloads and administrative changes (anchors.md §1f)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, UTCDateTime, utcnow

# BIGINT ids on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY
EventId = BigInteger().with_variant(Integer(), "sqlite")


class DownloadEvent(Base):
    __tablename__ = "audit_downloads"
    __table_args__ = (
        Index("ix_audit_downloads_at", "at"),
        Index("ix_audit_downloads_channel_at", "channel", "at"),
        Index("ix_audit_downloads_username_at", "username", "at"),
        Index("ix_audit_downloads_package_at", "package", "at"),
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    username: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    channel: Mapped[str] = mapped_column(String(100))
    subdir: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(300))
    package: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger, default=0)


class ChangeEvent(Base):
    __tablename__ = "audit_changes"
    __table_args__ = (Index("ix_audit_changes_at", "at"), Index("ix_audit_changes_username_at", "username", "at"))

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    username: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(500))
    channel: Mapped[str | None] = mapped_column(String(100), nullable=True)
    before: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    after: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
