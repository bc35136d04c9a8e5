"""Per-source records, the persistent alias graph and the merged advisories built from them.

:func:`store_records` keeps one source's version of each record it carries (a re-sync of the same
source replaces its versions; records a source no longer lists are kept, as feeds are often
incremental). :func:`remerge` then recomputes the merged advisory of every alias-graph component a
changed record touches, as the pure function ``merge.merge`` of the component's stored records, and
keeps the merged rows, their searchable ids and their conda-name index in step.

A merged row is identified by its primary id. When components join (a new record links two ids) or a
primary id changes, the rows that lose their id are retired into the row that now serves it: their
links and curation rules move there (a curated link wins over an uncurated one of the same file), so
no curation decision is lost; the retired id stays an alias (``GET /api/cves/<old id>`` still answers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from condavault.db.base import utcnow
from condavault.vulns import store
from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.merge import SourceRecord, best_versions, components, idents, merge
from condavault.vulns.models import (
    VulnAdvisory,
    VulnAdvisoryName,
    VulnLinkRow,
    VulnNameEntry,
    VulnRecordIdent,
    VulnRule,
    VulnSource,
    VulnSourceRecord,
)
from condavault.vulns.scoring import DEFAULT_PREFERENCE, effective_score
from condavault.vulns.sources.names import NameEntry


@dataclass
class StoreResult:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    touched: set[int] = field(default_factory=set)  # record pks whose content changed


@dataclass
class MergeResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    changed_pks: list[int] = field(default_factory=list)  # merged advisories to re-match
    names: set[str] = field(default_factory=set)  # conda names whose links may change


def source_pk(session: Session, location: str) -> int:
    """The ``vuln_sources`` row of a location, created on first use."""
    location = location[:1000]
    pk = session.scalar(select(VulnSource.id).where(VulnSource.location == location))
    if pk is None:
        store.insert_ignore(
            session,
            VulnSource.__table__,  # type: ignore[arg-type]
            [{"location": location, "last_status": "", "advisories": 0, "names": 0}],
        )
        pk = session.scalar(select(VulnSource.id).where(VulnSource.location == location))
    assert pk is not None
    return pk


def store_records(session: Session, src_pk: int, advisories: Iterable[Advisory]) -> StoreResult:
    """Store one source's records (one version per feed x id: the newest of this fetch)."""
    result = StoreResult()
    incoming = best_versions(SourceRecord.of(a) for a in advisories)
    existing: dict[tuple[str, str], tuple[int, str]] = {
        (feed, rid): (pk, h)
        for pk, feed, rid, h in session.execute(
            select(
                VulnSourceRecord.id, VulnSourceRecord.feed, VulnSourceRecord.record_id, VulnSourceRecord.content_hash
            ).where(VulnSourceRecord.source_pk == src_pk)
        )
    }
    now = utcnow()
    fresh: list[SourceRecord] = []
    for rec in incoming:
        held = existing.get((rec.feed, rec.record_id[:100]))
        if held is None:
            fresh.append(rec)
        elif held[1] == rec.content_hash:
            result.unchanged += 1
        else:
            pk = held[0]
            session.execute(
                update(VulnSourceRecord)
                .where(VulnSourceRecord.id == pk)
                .values(
                    content_hash=rec.content_hash,
                    modified=rec.modified[:40],
                    data=rec.data or rec.advisory.to_json(),
                    updated_at=now,
                )
            )
            session.execute(delete(VulnRecordIdent).where(VulnRecordIdent.record_pk == pk))
            _insert_idents(session, {pk: rec})
            result.changed += 1
            result.touched.add(pk)
    for part in store.chunks(fresh, 1000):
        rows = [
            {
                "source_pk": src_pk,
                "feed": r.feed[:20],
                "record_id": r.record_id[:100],
                "content_hash": r.content_hash,
                "modified": r.modified[:40],
                "data": r.data or r.advisory.to_json(),
                "updated_at": now,
            }
            for r in part
        ]
        session.execute(VulnSourceRecord.__table__.insert(), rows)  # type: ignore[attr-defined]
        pks = {
            (feed, rid): pk
            for pk, feed, rid in session.execute(
                select(VulnSourceRecord.id, VulnSourceRecord.feed, VulnSourceRecord.record_id).where(
                    VulnSourceRecord.source_pk == src_pk,
                    VulnSourceRecord.record_id.in_([r.record_id[:100] for r in part]),
                )
            )
        }
        by_pk = {pks[(r.feed[:20], r.record_id[:100])]: r for r in part}
        _insert_idents(session, by_pk)
        result.new += len(part)
        result.touched.update(by_pk)
    return result


def _insert_idents(session: Session, records: dict[int, SourceRecord]) -> None:
    rows = [{"record_pk": pk, "ident": ident} for pk, rec in records.items() for ident in sorted(idents(rec.advisory))]
    store.insert_ignore(session, VulnRecordIdent.__table__, rows)  # type: ignore[arg-type]


def store_name_entries(session: Session, src_pk: int, entries: list[NameEntry]) -> bool:
    """Replace the name mapping entries of one source (a mapping file is a full snapshot); True if they
    changed (then the mapping generation is bumped)."""
    new = {(e.ecosystem, e.name, e.conda_name, e.relation) for e in entries}
    old = {
        tuple(row)
        for row in session.execute(
            select(VulnNameEntry.ecosystem, VulnNameEntry.name, VulnNameEntry.conda_name, VulnNameEntry.relation).where(
                VulnNameEntry.source_pk == src_pk
            )
        )
    }
    if new == old:
        return False
    session.execute(delete(VulnNameEntry).where(VulnNameEntry.source_pk == src_pk))
    rows = [
        {"source_pk": src_pk, "ecosystem": eco, "name": name, "conda_name": conda, "relation": rel}
        for eco, name, conda, rel in sorted(new)
    ]
    store.insert_ignore(session, VulnNameEntry.__table__, rows)  # type: ignore[arg-type]
    store.bump_meta(session, "mapping")
    return True


def name_entries(session: Session) -> list[tuple[NameEntry, str]]:
    """Every synced name mapping entry with the location of its source."""
    return [
        (NameEntry(name, conda, rel, eco), loc)
        for eco, name, conda, rel, loc in session.execute(
            select(
                VulnNameEntry.ecosystem,
                VulnNameEntry.name,
                VulnNameEntry.conda_name,
                VulnNameEntry.relation,
                VulnSource.location,
            ).join(VulnSource, VulnSource.id == VulnNameEntry.source_pk)
        )
    ]


def remove_source(
    session: Session, src_pk: int, mapping: NameMapping, preference: tuple[str, ...] = DEFAULT_PREFERENCE
) -> MergeResult:
    """Delete a source with its records and name entries, and re-merge what they were part of."""
    groups = set(session.scalars(select(VulnSourceRecord.group_pk).where(VulnSourceRecord.source_pk == src_pk)))
    if session.scalar(select(VulnNameEntry.id).where(VulnNameEntry.source_pk == src_pk).limit(1)) is not None:
        session.execute(delete(VulnNameEntry).where(VulnNameEntry.source_pk == src_pk))
        store.bump_meta(session, "mapping")
    record_pks = list(session.scalars(select(VulnSourceRecord.id).where(VulnSourceRecord.source_pk == src_pk)))
    for part in store.chunks(record_pks):  # explicit deletes: SQLite may run without foreign keys
        session.execute(delete(VulnRecordIdent).where(VulnRecordIdent.record_pk.in_(part)))
        session.execute(delete(VulnSourceRecord).where(VulnSourceRecord.id.in_(part)))
    session.execute(delete(VulnSource).where(VulnSource.id == src_pk))
    return remerge(session, (), mapping, preference, groups={g for g in groups if g is not None})


# -- merging -----------------------------------------------------------------------------------------


def _closure(session: Session, record_pks: set[int], groups: set[int]) -> set[int]:
    """Every record sharing an ident or a current merged group with the given records, transitively."""
    seen: set[int] = set()
    seen_idents: set[str] = set()
    seen_groups: set[int] = set()
    pending = set(record_pks)
    new_groups = set(groups)
    while pending or new_groups:
        for part in store.chunks(sorted(new_groups)):
            pending.update(session.scalars(select(VulnSourceRecord.id).where(VulnSourceRecord.group_pk.in_(part))))
        seen_groups |= new_groups
        new_groups = set()
        batch = pending - seen
        pending = set()
        if not batch:
            break
        seen |= batch
        new_idents: set[str] = set()
        for part in store.chunks(sorted(batch)):
            new_idents.update(session.scalars(select(VulnRecordIdent.ident).where(VulnRecordIdent.record_pk.in_(part))))
            new_groups.update(
                g
                for g in session.scalars(select(VulnSourceRecord.group_pk).where(VulnSourceRecord.id.in_(part)))
                if g is not None and g not in seen_groups
            )
        new_idents -= seen_idents
        seen_idents |= new_idents
        for part in store.chunks(sorted(new_idents)):
            pending.update(session.scalars(select(VulnRecordIdent.record_pk).where(VulnRecordIdent.ident.in_(part))))
    return seen


@dataclass
class _Loaded:
    record: SourceRecord
    idents: set[str]
    group_pk: int | None


def _load(session: Session, pks: set[int]) -> dict[int, _Loaded]:
    out: dict[int, _Loaded] = {}
    parsed: dict[str, Advisory] = {}
    for part in store.chunks(sorted(pks)):
        for pk, feed, rid, h, modified, data, group in session.execute(
            select(
                VulnSourceRecord.id,
                VulnSourceRecord.feed,
                VulnSourceRecord.record_id,
                VulnSourceRecord.content_hash,
                VulnSourceRecord.modified,
                VulnSourceRecord.data,
                VulnSourceRecord.group_pk,
            ).where(VulnSourceRecord.id.in_(part))
        ):
            adv = parsed.get(h) or parsed.setdefault(h, Advisory.from_json(data))
            rec = SourceRecord(feed, rid, h, modified or "", adv)
            out[pk] = _Loaded(rec, idents(adv) | {rid.upper()}, group)
    return out


def remerge(
    session: Session,
    record_pks: Iterable[int],
    mapping: NameMapping,
    preference: tuple[str, ...] = DEFAULT_PREFERENCE,
    *,
    groups: set[int] | None = None,
) -> MergeResult:
    """Recompute the merged advisories of every component the given records (or merged rows) touch."""
    result = MergeResult()
    seed_groups = set(groups or ())
    loaded = _load(session, _closure(session, set(record_pks), seed_groups))
    comps = components({pk: item.idents for pk, item in loaded.items()})
    merged: list[tuple[set[int], Advisory]] = [(comp, merge(loaded[pk].record for pk in comp)) for comp in comps]
    primaries = {adv.id.upper(): i for i, (_, adv) in enumerate(merged)}
    rows: dict[str, tuple[int, str, str, float | None]] = {}  # upper id -> (pk, id, content hash, score)
    for part in store.chunks(sorted({adv.id for _, adv in merged})):
        for pk, aid, h, score in session.execute(
            select(VulnAdvisory.id, VulnAdvisory.advisory_id, VulnAdvisory.content_hash, VulnAdvisory.score).where(
                VulnAdvisory.advisory_id.in_(part)
            )
        ):
            rows[aid.upper()] = (pk, aid, h, score)
    old_groups = {item.group_pk for item in loaded.values() if item.group_pk is not None} | seed_groups
    now = utcnow()
    creates: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for _, adv in merged:
        values = _row_values(adv, preference, now)
        held = rows.get(adv.id.upper())
        if held is None:
            creates.append({"advisory_id": adv.id[:100], "created_at": now, **values})
        elif (held[1], held[2], held[3]) != (adv.id[:100], values["content_hash"], values["score"]):
            updates.append({"row_pk": held[0], "advisory_id": adv.id[:100], **values})
        else:
            result.unchanged += 1
    table = cast(Table, VulnAdvisory.__table__)
    for part in store.chunks(creates, 1000):
        session.execute(table.insert(), list(part))
        for pk, aid in session.execute(
            select(VulnAdvisory.id, VulnAdvisory.advisory_id).where(
                VulnAdvisory.advisory_id.in_([r["advisory_id"] for r in part])
            )
        ):
            rows[aid.upper()] = (pk, aid, "", None)
            result.changed_pks.append(pk)
    result.created = len(creates)
    if updates:
        for part in store.chunks([u["row_pk"] for u in updates]):
            result.names |= set(
                session.scalars(select(VulnAdvisoryName.name).where(VulnAdvisoryName.advisory_pk.in_(part)))
            )
        stmt = update(table).where(table.c.id == bindparam("row_pk"))
        for part in store.chunks(updates, 1000):
            session.connection().execute(stmt, list(part))
        result.changed_pks.extend(u["row_pk"] for u in updates)
        result.updated = len(updates)
    target_of = {i: rows[adv.id.upper()][0] for i, (_, adv) in enumerate(merged)}
    moves = [
        {"rec_pk": pk, "target": target_of[i]}
        for i, (comp, _) in enumerate(merged)
        for pk in sorted(comp)
        if loaded[pk].group_pk != target_of[i]
    ]
    records = cast(Table, VulnSourceRecord.__table__)
    moved = update(records).where(records.c.id == bindparam("rec_pk")).values(group_pk=bindparam("target"))
    for part in store.chunks(moves, 2000):
        session.connection().execute(moved, list(part))
    targets = set(target_of.values())
    for old in sorted(old_groups - targets):
        old_id = session.scalar(select(VulnAdvisory.advisory_id).where(VulnAdvisory.id == old))
        if old_id is None:
            continue
        dest = primaries.get(old_id.upper())
        if dest is None:  # its id left the graph with its records (a removed source): follow a former record
            dest = next(
                (i for i, (comp, _) in enumerate(merged) if any(loaded[pk].group_pk == old for pk in comp)), None
            )
        result.names |= store.names_of(session, old)
        if dest is not None:
            _retire_into(session, old, target_of[dest])
            if target_of[dest] not in result.changed_pks:  # re-match the links it received
                result.changed_pks.append(target_of[dest])
        session.execute(delete(VulnAdvisory).where(VulnAdvisory.id == old))
        result.removed += 1
    by_pk = {target_of[i]: adv for i, (_, adv) in enumerate(merged)}
    changed = {pk: by_pk[pk] for pk in result.changed_pks}
    result.names |= store.index_advisories(session, changed, mapping)
    store.mark_pending(session, result.changed_pks)
    if changed or result.removed:
        store.bump_generation(session)
    return result


def _row_values(adv: Advisory, preference: tuple[str, ...], now: Any) -> dict[str, Any]:
    eff = effective_score(adv.scores, preference)
    data = adv.to_json()
    return {
        "summary": adv.summary[:5000],
        "max_score": adv.max_score,
        "score": eff.score if eff else None,
        "score_version": eff.version if eff else None,
        "score_source": (eff.source or eff.feed)[:200] if eff else None,
        "published": (adv.published or None) and adv.published[:40],
        "modified": (adv.modified or None) and adv.modified[:40],
        "withdrawn": bool(adv.withdrawn),
        "content_hash": hashlib.sha256(data.encode()).hexdigest(),
        "data": data,
        "origin": ", ".join(adv.sources)[:500],
        "updated_at": now,
    }


def _retire_into(session: Session, old: int, new: int) -> None:
    """Move the links and rules of merged row ``old`` to ``new`` (curated links win)."""
    taken = {
        link.record_id: link for link in session.scalars(select(VulnLinkRow).where(VulnLinkRow.advisory_pk == new))
    }
    for link in session.scalars(select(VulnLinkRow).where(VulnLinkRow.advisory_pk == old)).all():
        held = taken.get(link.record_id)
        if held is None:
            link.advisory_pk = new
            continue
        if link.curated_by and not held.curated_by:
            for attr in ("status", "curated_by", "rule_id", "status_reason", "updated_by", "updated_at", "evidence"):
                setattr(held, attr, getattr(link, attr))
        session.delete(link)
    session.execute(update(VulnRule).where(VulnRule.advisory_pk == old).values(advisory_pk=new))
    session.flush()


def rescore(session: Session, preference: tuple[str, ...]) -> int:
    """Recompute every merged advisory's effective score (after ``vulns_score_preference`` changed)."""
    changed = 0
    for pk, data, score, version, source in session.execute(
        select(
            VulnAdvisory.id,
            VulnAdvisory.data,
            VulnAdvisory.score,
            VulnAdvisory.score_version,
            VulnAdvisory.score_source,
        )
    ).all():
        eff = effective_score(Advisory.from_json(data).scores, preference)
        values = (eff.score, eff.version, (eff.source or eff.feed)[:200]) if eff else (None, None, None)
        if values != (score, version, source):
            session.execute(
                update(VulnAdvisory)
                .where(VulnAdvisory.id == pk)
                .values(score=values[0], score_version=values[1], score_source=values[2])
            )
            changed += 1
    if changed:
        store.bump_generation(session)
    return changed


def sources_summary(session: Session) -> list[dict[str, Any]]:
    """Every source with its record and name entry counts and last outcome."""
    out = []
    for row in session.scalars(select(VulnSource).order_by(VulnSource.id)):
        records = session.scalars(select(VulnSourceRecord.feed).where(VulnSourceRecord.source_pk == row.id)).all()
        feeds: dict[str, int] = {}
        for feed in records:
            feeds[feed] = feeds.get(feed, 0) + 1
        out.append(
            {
                "id": row.id,
                "location": row.location,
                "records": len(records),
                "feeds": feeds,
                "names": row.names,
                "last_run": row.last_run.isoformat() if row.last_run else None,
                "last_status": row.last_status,
            }
        )
    return out


def record_versions(session: Session, advisory_pk: int) -> list[dict[str, Any]]:
    """The per-source records an advisory is merged from (for ``GET /api/cves/{id}``)."""
    rows = session.execute(
        select(
            VulnSource.location,
            VulnSourceRecord.feed,
            VulnSourceRecord.record_id,
            VulnSourceRecord.modified,
            VulnSourceRecord.content_hash,
            VulnSourceRecord.data,
        )
        .join(VulnSource, VulnSource.id == VulnSourceRecord.source_pk)
        .where(VulnSourceRecord.group_pk == advisory_pk)
        .order_by(VulnSourceRecord.feed, VulnSourceRecord.record_id, VulnSource.location)
    )
    return [
        {
            "source": loc,
            "feed": feed,
            "id": rid,
            "modified": modified or None,
            "content_hash": h,
            "aliases": json.loads(data).get("aliases", []),
        }
        for loc, feed, rid, modified, h, data in rows
    ]
