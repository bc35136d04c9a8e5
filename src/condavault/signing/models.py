"""What condavault knows of one record's signatures: carried upstream bytes and the verification outcome.

``signatures`` is the record's entry of an upstream repodata ``signatures`` section (conda-content-trust:
``{"<keyid>": {"signature": "<hex>"}}``), kept as JSON text with every value unchanged. ``sidecar_sha256``
points at the CEP 50 attestation sidecar (a JSON array of Sigstore bundles) in the blob store, kept byte
for byte; its hash is the record's ``attestations_sha256``. ``status`` is the outcome of the last
verification: ``verified`` (a trusted key or identity signed it), ``unverified`` (signed, but by nobody
configured as trusted, or not checkable offline), ``failed`` (a signature or sidecar that does not verify)
or ``none`` (nothing to verify).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from condavault.channels.blobs import BLOB_COLUMNS
from condavault.db.base import Base, BigInt, UTCDateTime, utcnow

STATUSES = ("verified", "unverified", "failed", "none")


class RecordTrust(Base):
    __tablename__ = "record_trust"

    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    signatures: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the upstream record the signatures cover (compact, sorted JSON): published as is while it matches
    signed_record: Mapped[str | None] = mapped_column(Text, nullable=True)
    # digest of the record's published fragment when signed_record was saved: a later repodata patch
    # changes the fragment, and the patched record is published instead
    fragment_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sidecar_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    sidecar_size: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="none")
    method: Mapped[str | None] = mapped_column(String(40), nullable=True)
    identity: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# sidecars live in the blob store: never collected while a record points at them
if RecordTrust.sidecar_sha256 not in BLOB_COLUMNS:
    BLOB_COLUMNS.append(RecordTrust.sidecar_sha256)
