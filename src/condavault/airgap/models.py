"""Air-gap bundle bookkeeping.

* ``bundle_exports``: every bundle this server exported, with its table of contents per channel (zstd
  JSON: subdir, filename, sha256 and record digest of every record), so ``--since`` diffs against it;
* ``bundle_imports``: every bundle this server imported (or is importing), with its state; a bundle id
  seen ``done`` again is a no-op (idempotent);
* ``bundle_channel_states``: per (origin key, target) the bundle last applied and its watermark, which
  an incremental bundle's base must equal; the serial refuses a replayed older bundle.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow


class BundleExport(Base):
    __tablename__ = "bundle_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(64), unique=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    serial: Mapped[int] = mapped_column(BigInt, default=0)
    kinds: Mapped[str] = mapped_column(String(200), default="")
    summary: Mapped[str] = mapped_column(Text, default="{}")  # per-channel watermark, counts, bytes
    toc: Mapped[bytes] = mapped_column(LargeBinary)
    output: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BundleImport(Base):
    __tablename__ = "bundle_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(64), unique=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    origin_key: Mapped[str] = mapped_column(String(32))
    serial: Mapped[int] = mapped_column(BigInt, default=0)
    state: Mapped[str] = mapped_column(String(20), default="verifying")  # verifying | done
    source: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BundleChannelState(Base):
    __tablename__ = "bundle_channel_states"
    __table_args__ = (UniqueConstraint("origin_key", "target", name="uq_bundle_channel_states_origin_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    origin_key: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))  # "channel:<name>" or "vulns"
    bundle_id: Mapped[str] = mapped_column(String(64))
    serial: Mapped[int] = mapped_column(BigInt, default=0)
    watermark: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
