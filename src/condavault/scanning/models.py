"""Scanning bookkeeping.

* ``scan_verdicts``: the verdict of every scanned archive (by sha256): ``clean`` / ``suspicious`` /
  ``malicious``, the rule and the file that fired, the rule-set version it was reached under, and the
  install-time code properties found (link scripts, activate.d, env_vars.d, menuinst, entry points);
* ``quarantined_files``: files a verdict kept out of a channel: the blob is stored (its sha256 is a blob
  column, so no clean-up deletes it) and the record waits here, never indexed, never served, until a
  reviewer releases (the record goes through ``put_records`` and the index runs) or deletes it;
* ``blocked_hashes``: known-bad sha256s (of archives or of files inside them);
* ``scan_channel_policies``: per channel, whether ``suspicious`` verdicts are quarantined too;
* ``scan_state``: small key/value state (the rescan job's cursor).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow


class ScanVerdict(Base):
    __tablename__ = "scan_verdicts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(20))  # clean | suspicious | malicious
    rule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    ruleset: Mapped[str] = mapped_column(String(64))
    properties: Mapped[str] = mapped_column(Text, default="{}")
    findings: Mapped[str] = mapped_column(Text, default="[]")
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuarantinedFile(Base):
    __tablename__ = "quarantined_files"
    __table_args__ = (
        UniqueConstraint("channel_id", "subdir", "filename", name="uq_quarantined_files_channel_id"),
        Index("ix_quarantined_files_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    subdir: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInt, default=0)
    record: Mapped[str] = mapped_column(Text)  # the repodata record it would get (JSON)
    extra: Mapped[str] = mapped_column(Text, default="{}")  # about, run_exports, paths_summary (JSON)
    verdict: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    findings: Mapped[str] = mapped_column(Text, default="[]")
    ruleset: Mapped[str] = mapped_column(String(64))
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    uploaded_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="quarantined")  # quarantined
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlockedHash(Base):
    __tablename__ = "blocked_hashes"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScanChannelPolicy(Base):
    __tablename__ = "scan_channel_policies"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    quarantine_suspicious: Mapped[bool] = mapped_column(Boolean, default=False)


class ScanState(Base):
    __tablename__ = "scan_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
