"""Matching stored advisories to records, incrementally in both directions.

* a new or changed advisory is matched against the records of the conda names it maps to
  (:func:`match_advisories`);
* a new record is matched against the advisories indexed under its name (:func:`match_records`), called
  by the ingest listener and by the sweep over records that have no ``vuln_record_state`` row yet
  (metadata-only imports and mirror inserts do not fire an ingest event).

Every new link starts as ``reported`` unless a curation rule (advisory x package x version range)
covers it. A link that no longer matches is deleted (its curation history stays); a link that still
matches takes the current match's ``matched_by``, ``reason`` and ``match_kind`` (its curation stays).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.db.base import utcnow
from condavault.vulns import curation, store
from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.matching import Candidate, Match, index_by_conda_name, match_record
from condavault.vulns.models import VulnAdvisory, VulnAdvisoryName, VulnLinkRow, VulnRecordState

RECORD_CHUNK = 500
_ID = re.compile(r"^(CVE-\d{4}-\d+|GHSA(-[0-9a-z]{4}){3}|PYSEC-\d{4}-\d+|OSV-\d{4}-\d+)$", re.I)


@dataclass
class MatchStats:
    records: int = 0
    links_added: int = 0
    links_removed: int = 0
    links_updated: int = 0  # kept links whose match (reason, matched_by, kind) changed
    names: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "links_added": self.links_added,
            "links_removed": self.links_removed,
            "links_updated": self.links_updated,
        }


def _apply(
    session: Session,
    desired: dict[tuple[int, int], Match],
    existing: dict[tuple[int, int], tuple[int, str, str, str]],
    versions: dict[int, tuple[str, str]],
    stats: MatchStats,
) -> None:
    """Insert the desired links that are missing, delete existing links no longer desired, and bring the
    match (``matched_by``, ``reason``, ``match_kind``) of kept links up to date (their curation stays)."""
    stale = set(existing) - set(desired)
    for part in store.chunks(sorted(existing[k][0] for k in stale)):
        session.execute(delete(VulnLinkRow).where(VulnLinkRow.id.in_(part)))
    stats.links_removed += len(stale)
    refreshed = [
        {"link_pk": existing[k][0], "m_by": m.matched_by[:300], "m_reason": m.reason, "m_kind": m.kind}
        for k, m in desired.items()
        if k in existing and existing[k][1:] != (m.matched_by[:300], m.reason, m.kind)
    ]
    if refreshed:
        table = cast(Table, VulnLinkRow.__table__)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("link_pk"))
            .values(
                matched_by=bindparam("m_by"),
                reason=bindparam("m_reason"),
                match_kind=bindparam("m_kind"),
                updated_at=utcnow(),
            )
        )
        for part in store.chunks(refreshed, 2000):
            session.connection().execute(stmt, list(part))
        stats.links_updated += len(refreshed)
    new = [k for k in desired if k not in existing]
    if not new:
        if stale or refreshed:
            store.bump_generation(session)
        return
    rules = curation.load_rules(session, {adv for adv, _ in new})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for adv_pk, rec_id in new:
        m = desired[(adv_pk, rec_id)]
        name, version = versions[rec_id]
        rule = curation.rule_for(rules, adv_pk, name, version)
        rows.append(
            {
                "advisory_pk": adv_pk,
                "record_id": rec_id,
                "status": rule.status if rule else "reported",
                "curated_by": "rule" if rule else "",
                "rule_id": rule.id if rule else None,
                "matched_by": m.matched_by[:300],
                "match_kind": m.kind,
                "reason": m.reason,
                "status_reason": rule.reason if rule else "",
                "created_at": now,
                "updated_at": now,
            }
        )
    store.insert_ignore(session, VulnLinkRow.__table__, rows)  # type: ignore[arg-type]
    stats.links_added += len(rows)
    store.bump_generation(session)
    new_records = sorted({rec_id for _, rec_id in new})
    for part in store.chunks(new_records):  # builds that declared advisories in info/security.json
        for rec_id, security in session.execute(
            select(VulnRecordState.record_id, VulnRecordState.security).where(
                VulnRecordState.record_id.in_(part), VulnRecordState.security.is_not(None)
            )
        ):
            if security is not None:
                record_evidence(session, rec_id, json.loads(security))


class _Matcher:
    """``match_record`` memoised by (name, version): builds of one version share their verdicts."""

    def __init__(self, index: dict[str, list[Candidate]], mapping: NameMapping) -> None:
        self.index = index
        self.priority = mapping.feed_priority
        self.cache: dict[tuple[str, str], list[Match]] = {}

    def __call__(self, name: str, version: str) -> list[Match]:
        key = (name, version)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = match_record({"name": name, "version": version}, self.index, self.priority)
        return hit


def _existing(session: Session, column: Any, keys: Iterable[int]) -> dict[tuple[int, int], tuple[int, str, str, str]]:
    """(advisory pk, record id) -> (link pk, matched_by, reason, match_kind) of the links whose
    ``column`` is one of ``keys``."""
    out: dict[tuple[int, int], tuple[int, str, str, str]] = {}
    for part in store.chunks(sorted(set(keys))):
        for pk, a, r, by, reason, kind in session.execute(
            select(
                VulnLinkRow.id,
                VulnLinkRow.advisory_pk,
                VulnLinkRow.record_id,
                VulnLinkRow.matched_by,
                VulnLinkRow.reason,
                VulnLinkRow.match_kind,
            ).where(column.in_(part))
        ):
            out[(a, r)] = (pk, by, reason, kind)
    return out


def match_advisories(session: Session, pks: Iterable[int], mapping: NameMapping) -> MatchStats:
    """Re-match the given advisories against the records of only the names they map to."""
    stats = MatchStats()
    pks = list(pks)
    if not pks:
        return stats
    # Serialised with the catalog writers: a sync that re-merges one of these advisories (and marks it
    # pending again) between our read of its data and our clearing of the flag would lose that change.
    store.lock_catalog(session)
    advisories = store.load_advisories(session, pks)
    by_id = {adv.id: pk for pk, adv in advisories.items()}
    index = index_by_conda_name(advisories.values(), mapping)
    matcher = _Matcher(index, mapping)
    names = sorted(index)
    stats.names = set(names)
    desired: dict[tuple[int, int], Match] = {}
    versions: dict[int, tuple[str, str]] = {}
    for part in store.chunks(names):
        for rec_id, name, version in session.execute(
            select(Record.id, Record.name, Record.version).where(Record.name.in_(part))
        ):
            stats.records += 1
            for m in matcher(name, version):
                desired[(by_id[m.advisory_id], rec_id)] = m
                versions[rec_id] = (name, version)
    _apply(session, desired, _existing(session, VulnLinkRow.advisory_pk, pks), versions, stats)
    store.mark_pending(session, pks, False)
    return stats


def match_records(session: Session, record_ids: Iterable[int], mapping: NameMapping) -> MatchStats:
    """Match records against the advisories indexed under their names; mark them as matched."""
    stats = MatchStats()
    ids = sorted(set(record_ids))
    for part in store.chunks(ids, RECORD_CHUNK):
        rows = list(
            session.execute(
                select(Record.id, Record.name, Record.version, Record.channel_id).where(Record.id.in_(part))
            )
        )
        if not rows:
            continue
        stats.records += len(rows)
        names = {r[1] for r in rows}
        pks = store.advisory_pks_for_names(session, names)
        advisories = store.load_advisories(session, pks) if pks else {}
        by_id = {adv.id: pk for pk, adv in advisories.items()}
        matcher = _Matcher(index_by_conda_name(advisories.values(), mapping), mapping)
        desired: dict[tuple[int, int], Match] = {}
        versions: dict[int, tuple[str, str]] = {}
        for rec_id, name, version, _cid in rows:
            versions[rec_id] = (name, version)
            for m in matcher(name, version):
                desired[(by_id[m.advisory_id], rec_id)] = m
        _apply(session, desired, _existing(session, VulnLinkRow.record_id, [r[0] for r in rows]), versions, stats)
        now = utcnow()
        state_rows = [{"record_id": r[0], "channel_id": r[3], "matched_at": now} for r in rows]
        store.insert_ignore(session, VulnRecordState.__table__, state_rows)  # type: ignore[arg-type]
    return stats


def unmatched_record_ids(session: Session, limit: int = 20000, channel_id: int | None = None) -> list[int]:
    """Records never matched (no ``vuln_record_state`` row) whose name some advisory maps to.

    Records of other names cannot match anything, so they are left alone (no write at all on a server
    without advisories); a later advisory for their name matches them directly."""
    stmt = (
        select(Record.id)
        .outerjoin(VulnRecordState, VulnRecordState.record_id == Record.id)
        .where(VulnRecordState.record_id.is_(None), Record.name.in_(select(VulnAdvisoryName.name).distinct()))
        .order_by(Record.id)
        .limit(limit)
    )
    if channel_id is not None:
        stmt = stmt.where(Record.channel_id == channel_id)
    return list(session.scalars(stmt))


# -- info/security.json evidence ------------------------------------------------------------------


def declared_ids(security: Any) -> dict[str, Any]:
    """Advisory ids a build's ``info/security.json`` mentions, each with the JSON that mentions it.

    The file has no fixed schema in the wild, so any string that looks like an advisory id counts
    (``{"mitigated": ["CVE-..."]}``, ``{"cves": [{"id": "CVE-...", "status": "mitigated"}]}``, ...).
    """
    found: dict[str, Any] = {}

    def walk(node: Any, context: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and _ID.match(key):
                    found.setdefault(key.upper(), {key: value})
                walk(value, node)
        elif isinstance(node, list):
            for item in node:
                walk(item, context if not isinstance(item, dict) else item)
        elif isinstance(node, str) and _ID.match(node.strip()):
            found.setdefault(node.strip().upper(), context)

    walk(security, security)
    return found


def record_evidence(session: Session, record_id: int, security: Any) -> int:
    """Attach ``info/security.json`` statements to the links of one record; returns links touched."""
    declared = declared_ids(security)
    if not declared:
        return 0
    n = 0
    links = session.execute(
        select(VulnLinkRow, VulnAdvisory.data).join(VulnAdvisory).where(VulnLinkRow.record_id == record_id)
    )
    for link, data in links:
        adv = Advisory.from_json(data)
        hits = {i: declared[i.upper()] for i in adv.ids if i.upper() in declared}
        if hits:
            link.evidence = json.dumps({"source": "info/security.json", "declared": hits}, default=str)
            n += 1
    if n:
        store.bump_generation(session)
    return n
