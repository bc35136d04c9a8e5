"""Merged advisory rows: searchable ids, the conda-name index, look-ups, the generation counter.

Rows are written by ``catalog.remerge`` (only when their content hash changed; only those are re-matched,
see ``services.match_advisories``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.matching import candidates_for
from condavault.vulns.models import VulnAdvisory, VulnAdvisoryId, VulnAdvisoryName, VulnMeta

CHUNK = 500


def conda_names(advisory: Advisory, mapping: NameMapping) -> dict[str, str]:
    """Conda name -> ``direct`` / ``bundled`` for every name the advisory's entries map to (none when
    withdrawn); what ``vuln_advisory_names`` holds."""
    return {name: c.kind for name, c in candidates_for(advisory, mapping).items()}


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def insert_ignore(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping those that hit a unique constraint (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).on_conflict_do_nothing()  # type: ignore[assignment]
    for part in chunks(rows, 2000):
        session.execute(stmt, list(part))


def names_of(session: Session, advisory_pk: int) -> set[str]:
    return set(session.scalars(select(VulnAdvisoryName.name).where(VulnAdvisoryName.advisory_pk == advisory_pk)))


def index_advisories(session: Session, advisories: dict[int, Advisory], mapping: NameMapping) -> set[str]:
    """(Re)write the searchable ids and the conda-name index of merged advisories; returns their names."""
    names: set[str] = set()
    pks = sorted(advisories)
    for part in chunks(pks):
        session.execute(delete(VulnAdvisoryId).where(VulnAdvisoryId.advisory_pk.in_(part)))
        session.execute(delete(VulnAdvisoryName).where(VulnAdvisoryName.advisory_pk.in_(part)))
    id_rows: list[dict[str, Any]] = []
    name_rows: list[dict[str, Any]] = []
    for pk in pks:
        adv = advisories[pk]
        for ident in sorted({i.strip().upper()[:100] for i in adv.ids if i and i.strip()}):
            id_rows.append({"advisory_pk": pk, "ident": ident})
        for name, kind in sorted(conda_names(adv, mapping).items()):
            name_rows.append({"advisory_pk": pk, "name": name[:100], "kind": kind})
            names.add(name)
    insert_ignore(session, VulnAdvisoryId.__table__, id_rows)  # type: ignore[arg-type]
    insert_ignore(session, VulnAdvisoryName.__table__, name_rows)  # type: ignore[arg-type]
    return names


def reindex_names(session: Session, mapping: NameMapping) -> tuple[set[int], set[str]]:
    """Rebuild the conda-name index of every advisory after the name mapping changed; returns the
    advisories whose names (or their kinds) changed and the names concerned."""
    old = {
        (pk, n, k)
        for pk, n, k in session.execute(
            select(VulnAdvisoryName.advisory_pk, VulnAdvisoryName.name, VulnAdvisoryName.kind)
        )
    }
    new: set[tuple[int, str, str]] = set()
    for pk, data in session.execute(select(VulnAdvisory.id, VulnAdvisory.data)):
        for name, kind in conda_names(Advisory.from_json(data), mapping).items():
            new.add((pk, name[:100], kind))
    diff = old ^ new
    if not diff:
        return set(), set()
    pks = {pk for pk, _, _ in diff}
    for part in chunks(sorted(pks)):
        session.execute(delete(VulnAdvisoryName).where(VulnAdvisoryName.advisory_pk.in_(part)))
    rows = [{"advisory_pk": pk, "name": n, "kind": k} for pk, n, k in sorted(new) if pk in pks]
    insert_ignore(session, VulnAdvisoryName.__table__, rows)  # type: ignore[arg-type]
    bump_generation(session)
    return pks, {n for _, n, _ in diff}


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


CATALOG_LOCK = 0x63765F76756C6E  # "cv_vuln": the PostgreSQL advisory lock of catalog writes


def lock_catalog(session: Session) -> None:
    """Serialise the writers of per-source records and merged advisories across processes (several
    ``condavault worker`` or ``serve`` replicas): a transaction-scoped PostgreSQL advisory lock; SQLite's
    write transactions (``BEGIN IMMEDIATE``) are serial already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})


def get_meta(session: Session, key: str) -> int | None:
    value = session.scalar(select(VulnMeta.value).where(VulnMeta.key == key))
    return None if value is None else int(value)


def set_meta(session: Session, key: str, value: int) -> None:
    res = session.execute(update(VulnMeta).where(VulnMeta.key == key).values(value=value))
    if not res.rowcount:  # type: ignore[attr-defined]
        insert_ignore(session, VulnMeta.__table__, [{"key": key, "value": value}])  # type: ignore[arg-type]


def bump_meta(session: Session, key: str) -> None:
    res = session.execute(update(VulnMeta).where(VulnMeta.key == key).values(value=VulnMeta.value + 1))
    if not res.rowcount:  # type: ignore[attr-defined]
        insert_ignore(session, VulnMeta.__table__, [{"key": key, "value": 1}])  # type: ignore[arg-type]


def get_generation(session: Session) -> int:
    return get_meta(session, "generation") or 0


def bump_generation(session: Session) -> None:
    """Advisories, links or curation changed: caches keyed by the generation are stale."""
    bump_meta(session, "generation")


def pending_advisories(session: Session, limit: int = 1000) -> list[int]:
    """Merged advisories that changed and whose links were not re-matched yet (a sync killed mid-way)."""
    return list(
        session.scalars(
            select(VulnAdvisory.id).where(VulnAdvisory.match_pending.is_(True)).order_by(VulnAdvisory.id).limit(limit)
        )
    )


def mark_pending(session: Session, pks: Iterable[int], pending: bool = True) -> None:
    for part in chunks(sorted(set(pks))):
        session.execute(update(VulnAdvisory).where(VulnAdvisory.id.in_(part)).values(match_pending=pending))
