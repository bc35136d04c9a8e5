"""Advisory persistence: normalised JSON rows, searchable ids, the conda-name index, the generation.

An advisory is re-stored only when its content hash (sha256 of ``Advisory.to_json``) changed, and only
re-stored advisories are re-matched (see ``services.match_advisories``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from condavault.db.base import utcnow
from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.models import VulnAdvisory, VulnAdvisoryId, VulnAdvisoryName, VulnMeta

CHUNK = 500


def content_hash(advisory: Advisory) -> str:
    return hashlib.sha256(advisory.to_json().encode()).hexdigest()


def conda_names(advisory: Advisory, mapping: NameMapping) -> set[str]:
    """Every conda name the advisory's affected entries map to (empty for withdrawn advisories)."""
    if advisory.withdrawn:
        return set()
    names: set[str] = set()
    for aff in advisory.affected:
        names |= mapping.conda_names_for(aff)
    return names


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def insert_ignore(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping those that hit a unique constraint (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing()  # type: ignore[assignment]
    for part in chunks(rows, 2000):
        session.execute(stmt, list(part))


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_pks: list[int] | None = None
    names: set[str] | None = None  # conda names whose matches may have changed


def upsert_advisories(
    session: Session, advisories: Iterable[Advisory], mapping: NameMapping, origin: str = ""
) -> UpsertResult:
    """Store advisories; return which changed (new or different content) and the names they touch."""
    result = UpsertResult(changed_pks=[], names=set())
    items = {a.id: a for a in advisories}
    ids = list(items)
    existing: dict[str, tuple[int, str]] = {}
    for part in chunks(ids):
        for pk, aid, h in session.execute(
            select(VulnAdvisory.id, VulnAdvisory.advisory_id, VulnAdvisory.content_hash).where(
                VulnAdvisory.advisory_id.in_(part)
            )
        ):
            existing[aid] = (pk, h)
    now = utcnow()
    old_names: dict[int, set[str]] = {}
    changed: list[tuple[int, Advisory]] = []
    fresh: list[tuple[dict[str, Any], Advisory]] = []
    for aid, adv in items.items():
        h = content_hash(adv)
        row_values = {
            "summary": adv.summary[:5000],
            "max_score": adv.max_score,
            "published": (adv.published or None) and adv.published[:40],
            "modified": (adv.modified or None) and adv.modified[:40],
            "withdrawn": bool(adv.withdrawn),
            "content_hash": h,
            "data": adv.to_json(),
            "updated_at": now,
        }
        if aid in existing:
            pk, old = existing[aid]
            if old == h:
                result.unchanged += 1
                continue
            session.execute(update(VulnAdvisory).where(VulnAdvisory.id == pk).values(**row_values))
            result.updated += 1
            old_names[pk] = set(
                session.scalars(select(VulnAdvisoryName.name).where(VulnAdvisoryName.advisory_pk == pk))
            )
            session.execute(delete(VulnAdvisoryId).where(VulnAdvisoryId.advisory_pk == pk))
            session.execute(delete(VulnAdvisoryName).where(VulnAdvisoryName.advisory_pk == pk))
            changed.append((pk, adv))
        else:
            fresh.append(({"advisory_id": aid, "origin": origin[:500], "created_at": now, **row_values}, adv))
    table = VulnAdvisory.__table__
    for part in chunks(fresh, 1000):
        session.execute(table.insert(), [row for row, _ in part])  # type: ignore[attr-defined]
        got = dict(
            session.execute(
                select(VulnAdvisory.advisory_id, VulnAdvisory.id).where(
                    VulnAdvisory.advisory_id.in_([row["advisory_id"] for row, _ in part])
                )
            ).all()
        )
        changed.extend((got[row["advisory_id"]], adv) for row, adv in part)
        result.created += len(part)
    id_rows: list[dict[str, Any]] = []
    name_rows: list[dict[str, Any]] = []
    for pk, adv in changed:
        for ident in {i.upper() for i in adv.ids if i}:
            id_rows.append({"advisory_pk": pk, "ident": ident[:100]})
        names = conda_names(adv, mapping)
        for name in names:
            name_rows.append({"advisory_pk": pk, "name": name[:100]})
        result.names |= names | old_names.get(pk, set())  # type: ignore[operator]
        result.changed_pks.append(pk)  # type: ignore[union-attr]
    insert_ignore(session, VulnAdvisoryId.__table__, id_rows)  # type: ignore[arg-type]
    insert_ignore(session, VulnAdvisoryName.__table__, name_rows)  # type: ignore[arg-type]
    if changed:
        bump_generation(session)
    return result


def reindex_names(session: Session, mapping: NameMapping) -> set[str]:
    """Rebuild the conda-name index of every advisory (after the mapping files changed)."""
    touched: set[str] = set()
    rows: list[dict[str, Any]] = []
    old = {(pk, n) for pk, n in session.execute(select(VulnAdvisoryName.advisory_pk, VulnAdvisoryName.name))}
    new: set[tuple[int, str]] = set()
    for pk, data in session.execute(select(VulnAdvisory.id, VulnAdvisory.data)):
        for name in conda_names(Advisory.from_json(data), mapping):
            new.add((pk, name))
    if new == old:
        return touched
    session.execute(delete(VulnAdvisoryName))
    rows = [{"advisory_pk": pk, "name": n} for pk, n in sorted(new)]
    insert_ignore(session, VulnAdvisoryName.__table__, rows)  # type: ignore[arg-type]
    touched = {n for _, n in old ^ new}
    bump_generation(session)
    return touched


def load_advisories(session: Session, pks: Iterable[int] | None = None) -> dict[int, Advisory]:
    """pk -> Advisory, for the given pks or all."""
    out: dict[int, Advisory] = {}
    if pks is None:
        for pk, data in session.execute(select(VulnAdvisory.id, VulnAdvisory.data)):
            out[pk] = Advisory.from_json(data)
        return out
    for part in chunks(list(pks)):
        for pk, data in session.execute(select(VulnAdvisory.id, VulnAdvisory.data).where(VulnAdvisory.id.in_(part))):
            out[pk] = Advisory.from_json(data)
    return out


def advisory_pks_for_names(session: Session, names: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for part in chunks(sorted(set(names))):
        out.update(session.scalars(select(VulnAdvisoryName.advisory_pk).where(VulnAdvisoryName.name.in_(part))))
    return out


def find_advisory(session: Session, ident: str) -> VulnAdvisory | None:
    """An advisory by its id or any alias (case-insensitive)."""
    row = session.scalar(select(VulnAdvisory).where(VulnAdvisory.advisory_id == ident))
    if row is not None:
        return row
    pk = session.scalar(select(VulnAdvisoryId.advisory_pk).where(VulnAdvisoryId.ident == ident.upper()).limit(1))
    return session.get(VulnAdvisory, pk) if pk is not None else None


def search_pks(session: Session, query: str) -> list[int]:
    """Advisories whose id/alias contains ``query`` or whose summary mentions it."""
    q = query.strip()
    like = f"%{q.upper()}%"
    by_id = select(VulnAdvisoryId.advisory_pk).where(VulnAdvisoryId.ident.like(like))
    by_name = select(VulnAdvisoryName.advisory_pk).where(VulnAdvisoryName.name == q.lower())
    stmt = select(VulnAdvisory.id).where(
        or_(
            VulnAdvisory.id.in_(by_id),
            VulnAdvisory.id.in_(by_name),
            func.lower(VulnAdvisory.summary).like(f"%{q.lower()}%"),
        )
    )
    return list(session.scalars(stmt))


def get_generation(session: Session) -> int:
    return int(session.scalar(select(VulnMeta.value).where(VulnMeta.key == "generation")) or 0)


def bump_generation(session: Session) -> None:
    """Advisories, links or curation changed: caches keyed by the generation are stale."""
    res = session.execute(update(VulnMeta).where(VulnMeta.key == "generation").values(value=VulnMeta.value + 1))
    if not res.rowcount:  # type: ignore[attr-defined]
        insert_ignore(session, VulnMeta.__table__, [{"key": "generation", "value": 1}])  # type: ignore[arg-type]
