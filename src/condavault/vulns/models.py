"""Vulnerability tables: per-source records, the merged advisories, their ids and conda names, links to
records, curation, the PyPI <-> conda name mapping.

* ``vuln_source_records``: each source's own version of each record it carries (source x feed x record
  id, normalised JSON, content hash), and ``group_pk``, the merged advisory it belongs to;
* ``vuln_record_idents``: the persistent alias graph (record -> its id and aliases); records sharing an
  ident form one advisory (``merge.py``);
* ``vuln_advisories``: one merged, served advisory (``Advisory.to_json``, a pure function of its records)
  with its content hash, max score and **effective score** (``scoring.effective_score``);
* ``vuln_advisory_ids``: the id and every alias, for search (``CVE-2022-37434`` finds the PYSEC record);
* ``vuln_advisory_names``: the conda names an advisory maps to, so a new record is matched only
  against advisories indexed under its name;
* ``vuln_links``: (advisory, record) with a curation status (``reported`` when machine-matched);
* ``vuln_rules``: a curation decision for advisory x package x version range, applied to existing and
  future links;
* ``vuln_curation_events``: who changed which status, when and why;
* ``vuln_record_state``: a record has been matched (the sweep looks for records without a row) and its
  cached dependency-tree risk; ``vuln_channel_risk`` the fingerprint the cache was computed at;
* ``vuln_sources``: per-source HTTP validators (ETag / Last-Modified) and the last outcome;
* ``vuln_name_entries``: name mapping entries of synced mapping sources (PyPI name x conda name x
  relation ``is`` / ``bundles`` / ``not-pypi``); the shipped default table is read from the package;
* ``vuln_meta``: the generation counter bumped whenever advisories, links or curation change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    or_,
)
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow

STATUSES = ("reported", "active", "mitigated", "cleared", "disputed")
NOT_COUNTING = ("cleared", "mitigated")
MATCH_KINDS = ("direct", "bundled")


def counts(status: str, match_kind: str = "direct") -> bool:
    """Whether a link makes its build vulnerable: not cleared / mitigated, and a link through a bundled
    copy (``match_kind`` ``bundled``) only once a curator confirmed it (``active``)."""
    if match_kind == "bundled":
        return status == "active"
    return status not in NOT_COUNTING


def counting_clause() -> ColumnElement[bool]:
    """:func:`counts` as a SQL condition on ``vuln_links``."""
    return or_(
        and_(VulnLinkRow.match_kind != "bundled", VulnLinkRow.status.not_in(NOT_COUNTING)),
        and_(VulnLinkRow.match_kind == "bundled", VulnLinkRow.status == "active"),
    )


class VulnAdvisory(Base):
    __tablename__ = "vuln_advisories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[str] = mapped_column(String(100), unique=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # the effective score
    score_version: Mapped[str | None] = mapped_column(String(10), nullable=True)
    score_source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    match_pending: Mapped[bool] = mapped_column(Boolean, default=False)  # changed, links not yet re-matched
    published: Mapped[str | None] = mapped_column(String(40), nullable=True)
    modified: Mapped[str | None] = mapped_column(String(40), nullable=True)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    content_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnAdvisoryId(Base):
    __tablename__ = "vuln_advisory_ids"
    __table_args__ = (UniqueConstraint("advisory_pk", "ident", name="uq_vuln_advisory_ids_advisory_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_pk: Mapped[int] = mapped_column(ForeignKey("vuln_advisories.id", ondelete="CASCADE"))
    ident: Mapped[str] = mapped_column(String(100), index=True)


class VulnAdvisoryName(Base):
    __tablename__ = "vuln_advisory_names"
    __table_args__ = (UniqueConstraint("advisory_pk", "name", name="uq_vuln_advisory_names_advisory_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_pk: Mapped[int] = mapped_column(ForeignKey("vuln_advisories.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="direct")  # "direct" | "bundled"


class VulnLinkRow(Base):
    __tablename__ = "vuln_links"
    __table_args__ = (
        UniqueConstraint("advisory_pk", "record_id", name="uq_vuln_links_advisory_pk"),
        Index("ix_vuln_links_record_id", "record_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_pk: Mapped[int] = mapped_column(ForeignKey("vuln_advisories.id", ondelete="CASCADE"))
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="reported")
    curated_by: Mapped[str] = mapped_column(String(10), default="")  # "" | "link" | "rule"
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    matched_by: Mapped[str] = mapped_column(String(300), default="")
    match_kind: Mapped[str] = mapped_column(String(10), default="direct")  # "direct" | "bundled"
    reason: Mapped[str] = mapped_column(Text, default="")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnRule(Base):
    __tablename__ = "vuln_rules"
    __table_args__ = (Index("ix_vuln_rules_advisory_pk_package", "advisory_pk", "package"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_pk: Mapped[int] = mapped_column(ForeignKey("vuln_advisories.id", ondelete="CASCADE"))
    package: Mapped[str] = mapped_column(String(100))
    versions: Mapped[str] = mapped_column(String(300), default="*")
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnCurationEvent(Base):
    __tablename__ = "vuln_curation_events"
    __table_args__ = (Index("ix_vuln_curation_events_advisory_id", "advisory_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(10))  # "link" | "rule"
    channel_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target: Mapped[str] = mapped_column(String(500))  # channel/subdir/filename or package + range
    link_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    before: Mapped[str | None] = mapped_column(String(20), nullable=True)
    after: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnRecordState(Base):
    __tablename__ = "vuln_record_state"

    record_id: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(Integer, index=True)
    matched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    risk: Mapped[float | None] = mapped_column(Float, nullable=True)
    risk_via: Mapped[str | None] = mapped_column(String(300), nullable=True)
    security: Mapped[str | None] = mapped_column(Text, nullable=True)  # the build's info/security.json


class VulnChannelRisk(Base):
    __tablename__ = "vuln_channel_risk"

    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(200))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


class VulnSource(Base):
    __tablename__ = "vuln_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(String(1000), unique=True)
    etag: Mapped[str | None] = mapped_column(String(500), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(100), nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[str] = mapped_column(Text, default="")
    advisories: Mapped[int] = mapped_column(BigInt, default=0)
    names: Mapped[int] = mapped_column(BigInt, default=0)  # name mapping entries it carries


class VulnSourceRecord(Base):
    __tablename__ = "vuln_source_records"
    __table_args__ = (UniqueConstraint("source_pk", "feed", "record_id", name="uq_vuln_source_records_source_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_pk: Mapped[int] = mapped_column(ForeignKey("vuln_sources.id", ondelete="CASCADE"))
    feed: Mapped[str] = mapped_column(String(20))
    record_id: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    modified: Mapped[str] = mapped_column(String(40), default="")
    data: Mapped[str] = mapped_column(Text)
    group_pk: Mapped[int | None] = mapped_column(
        ForeignKey("vuln_advisories.id", ondelete="SET NULL"), nullable=True, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnRecordIdent(Base):
    __tablename__ = "vuln_record_idents"
    __table_args__ = (UniqueConstraint("record_pk", "ident", name="uq_vuln_record_idents_record_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_pk: Mapped[int] = mapped_column(ForeignKey("vuln_source_records.id", ondelete="CASCADE"))
    ident: Mapped[str] = mapped_column(String(100), index=True)


class VulnNameEntry(Base):
    __tablename__ = "vuln_name_entries"
    __table_args__ = (
        UniqueConstraint("source_pk", "ecosystem", "name", "conda_name", name="uq_vuln_name_entries_source_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_pk: Mapped[int] = mapped_column(ForeignKey("vuln_sources.id", ondelete="CASCADE"))
    ecosystem: Mapped[str] = mapped_column(String(20), default="pypi")
    name: Mapped[str] = mapped_column(String(200), index=True)  # normalised (PEP 503 for PyPI)
    conda_name: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str] = mapped_column(String(10))  # "is" | "bundles" | "not-pypi"


class VulnMeta(Base):
    __tablename__ = "vuln_meta"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(BigInt, default=0)
