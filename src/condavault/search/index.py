"""Keep the search tables in step with ``records`` (pure SQL over a session; no HTTP, no permissions).

A package document (``search_packages``) is derived from the live records (not patch-removed) of one
(channel, name). Each carries a fingerprint of those records (count, max id, sum of ids and of
indexed timestamps), so :func:`sync_channel` finds the names that changed with one grouped query and
rebuilds only those. Every writer of records (upload, batch, copy, move, remove, mirror run, repodata
patch) ends in an index run of the subdir and most record a ``RecordsChanged``; both call it.

Files inside packages (``search_files``) are keyed by the package sha256 and written at ingest
(:func:`put_files`), or read back from stored archives by :func:`backfill_files`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.db.base import table
from condavault.indexing.dirty import subdirs_of
from condavault.packages.specs import version_key
from condavault.search.models import SearchFile, SearchPackage, SearchTrigram
from condavault.vulns.models import VulnAdvisory, VulnLinkRow, counting_clause

log = logging.getLogger(__name__)
CHUNK = 500
MAX_TEXT = 4000  # characters of a description that are indexed
MAX_KEYWORDS = 1000


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def trigrams(name: str) -> set[str]:
    """The trigrams of a name, padded like pg_trgm (two spaces before, one after) so prefixes weigh more."""
    s = f"  {name.lower()} "
    return {s[i : i + 3] for i in range(len(s) - 2)}


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity: shared trigrams over the union."""
    ta, tb = trigrams(a), trigrams(b)
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


# -- package documents ----------------------------------------------------------------------------------


def _live() -> Any:
    return Record.removed.is_(False)


def _of_names(session: Session, channel_id: int, names: Sequence[str]) -> list[Any]:
    """Where-clauses for the records of ``names`` in the channel, with the channel's subdirs listed: so SQLite
    looks each name up in the (channel, subdir, name) index instead of reading every record of the channel
    (which it chose for ``channel_id = ? AND name IN (...)``: O(channel) per sync of a few names)."""
    return [Record.channel_id == channel_id, Record.subdir.in_(subdirs_of(session, channel_id)), Record.name.in_(names)]


def sync_channel(session: Session, channel_id: int, names: Iterable[str] | None = None) -> int:
    """Bring the documents of ``channel_id`` up to date (only ``names``, if given). Returns how many
    documents were written or deleted."""
    current, stored, changed, gone = _out_of_date(session, channel_id, names)
    for part in chunks(changed):
        refresh_names(session, channel_id, part, current)
    for part in chunks(gone):
        session.execute(
            delete(SearchPackage).where(SearchPackage.channel_id == channel_id, SearchPackage.name.in_(part))
        )
    if changed or gone:
        _sync_trigrams(session, [n for n in changed if n not in stored], gone)
    return len(changed) + len(gone)


def is_up_to_date(session: Session, channel_id: int, names: Iterable[str] | None = None) -> bool:
    """Whether :func:`sync_channel` would write nothing (a read: callers look before taking a write lock)."""
    _, _, changed, gone = _out_of_date(session, channel_id, names)
    return not changed and not gone


def _out_of_date(
    session: Session, channel_id: int, names: Iterable[str] | None
) -> tuple[dict[str, str], dict[str, str], list[str], list[str]]:
    """The fingerprints of the live records and of the documents; the names whose document differs, and
    the documents of names without live records."""
    wanted = sorted(set(names)) if names is not None else None
    fps = select(
        Record.name,
        func.count(),
        func.max(Record.id),
        func.sum(Record.id),
        func.sum(Record.indexed_timestamp),
    ).where(_live())
    docs = select(SearchPackage.name, SearchPackage.fingerprint).where(SearchPackage.channel_id == channel_id)
    current: dict[str, str] = {}
    stored: dict[str, str] = {}
    parts: Iterable[Sequence[str] | None] = chunks(wanted) if wanted is not None else [None]
    for part in parts:
        q, d = fps.where(Record.channel_id == channel_id), docs
        if part is not None:
            q, d = fps.where(*_of_names(session, channel_id, part)), d.where(SearchPackage.name.in_(part))
        for name, n, mx, sm, ts in session.execute(q.group_by(Record.name)):
            current[name] = f"{n}:{mx}:{sm}:{ts}"
        stored.update((n, fp) for n, fp in session.execute(d))
    changed = [n for n, fp in current.items() if stored.get(n) != fp]
    gone = [n for n in stored if n not in current]
    return current, stored, changed, gone


def _text(value: Any, limit: int) -> str:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if isinstance(v, str | int | float))
    return str(value)[:limit] if isinstance(value, str | int | float) and value is not None else ""


def refresh_names(session: Session, channel_id: int, names: Sequence[str], fingerprints: dict[str, str]) -> None:
    """Rewrite the documents of ``names`` from their live records."""
    where = _of_names(session, channel_id, names)
    rows = session.execute(
        select(
            Record.id,
            Record.name,
            Record.version,
            Record.build_number,
            Record.timestamp,
            Record.subdir,
            Record.license,
            Record.about,
        ).where(*where, _live())
    ).all()
    by_name: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r)
    scores = dict(
        session.execute(
            select(Record.name, func.max(VulnAdvisory.score))
            .join(VulnLinkRow, VulnLinkRow.record_id == Record.id)
            .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
            .where(*where, _live(), counting_clause())
            .group_by(Record.name)
        ).all()
    )
    existing = dict(
        session.execute(
            select(SearchPackage.name, SearchPackage.id).where(
                SearchPackage.channel_id == channel_id, SearchPackage.name.in_(names)
            )
        ).all()
    )
    updates: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    for name, recs in by_name.items():
        latest = max(recs, key=lambda r: (version_key(r.version), r.build_number, r.timestamp or 0, r.id))
        about: dict[str, Any] = {}
        with_about = [r for r in recs if r.about]
        src = latest if latest.about else (max(with_about, key=lambda r: r.id) if with_about else None)
        if src is not None:
            try:
                got = json.loads(src.about)
                about = got if isinstance(got, dict) else {}
            except ValueError:
                about = {}
        keywords = " ".join(
            t for t in (_text(about.get("keywords"), MAX_KEYWORDS), _text(about.get("tags"), MAX_KEYWORDS)) if t
        )
        values = {
            "summary": _text(about.get("summary"), MAX_TEXT),
            "description": _text(about.get("description"), MAX_TEXT),
            "keywords": keywords[:MAX_KEYWORDS],
            "license": latest.license or _text(about.get("license"), 500) or None,
            "subdirs": " " + " ".join(sorted({r.subdir for r in recs})) + " ",
            "latest_version": latest.version[:100],
            "latest_id": latest.id,
            "latest_timestamp": latest.timestamp,
            "records": len(recs),
            "fingerprint": fingerprints.get(name, "")[:64],
            "max_score": scores.get(name),
        }
        pk = existing.get(name)
        if pk is not None:
            updates.append({"id": pk, **values})
        else:
            inserts.append({"channel_id": channel_id, "name": name, **values})
    # one statement each (executemany: a bulk upload of 1,000 new names is not 1,000 round trips)
    if updates:
        session.execute(update(SearchPackage), updates)  # by primary key
    if inserts and session.get_bind().dialect.name == "postgresql":  # a concurrent upload of the same new name
        stmt = pg_insert(SearchPackage)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["channel_id", "name"],
                set_={k: getattr(stmt.excluded, k) for k in inserts[0] if k not in ("channel_id", "name")},
            ),
            inserts,
        )
    elif inserts:  # SQLite write transactions are serial
        session.execute(insert(SearchPackage), inserts)


def _sync_trigrams(session: Session, added: list[str], gone: list[str]) -> None:
    """The trigram rows of names that appeared, and of names no channel has any more."""
    if added:
        have: set[str] = set()
        for part in chunks(sorted(set(added))):
            have.update(session.scalars(select(SearchTrigram.name).where(SearchTrigram.name.in_(part)).distinct()))
        rows = [{"trigram": t, "name": n} for n in set(added) - have for t in trigrams(n)]
        if session.get_bind().dialect.name == "postgresql":
            stmt: Any = pg_insert(SearchTrigram).on_conflict_do_nothing()
        else:
            stmt = insert(SearchTrigram).prefix_with("OR IGNORE")
        for part in chunks(rows, 2000):
            session.execute(stmt, list(part))
    if gone:
        for part in chunks(sorted(set(gone))):
            still = set(session.scalars(select(SearchPackage.name).where(SearchPackage.name.in_(part)).distinct()))
            drop = [n for n in part if n not in still]
            if drop:
                session.execute(delete(SearchTrigram).where(SearchTrigram.name.in_(drop)))


def rebuild_trigrams(session: Session) -> None:
    session.execute(delete(SearchTrigram))
    names = list(session.scalars(select(SearchPackage.name).distinct()))
    _sync_trigrams(session, names, [])


def refresh_scores(session: Session) -> int:
    """Recompute ``max_score`` of every document whose records carry CVE links or had one (a CVE or a
    curation changed). Returns how many changed."""
    got = session.execute(
        select(Record.channel_id, Record.name, func.max(VulnAdvisory.score))
        .join(VulnLinkRow, VulnLinkRow.record_id == Record.id)
        .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
        .where(_live(), counting_clause())
        .group_by(Record.channel_id, Record.name)
    ).all()
    want = {(c, n): s for c, n, s in got}
    have = {
        (c, n): (pk, s)
        for pk, c, n, s in session.execute(
            select(SearchPackage.id, SearchPackage.channel_id, SearchPackage.name, SearchPackage.max_score).where(
                SearchPackage.max_score.is_not(None)
            )
        )
    }
    changes: dict[int, float | None] = {}
    for key, (pk, s) in have.items():
        if want.get(key) != s:
            changes[pk] = want.get(key)
    missing = [k for k in want if k not in have]
    for c, n in missing:
        found = session.scalar(select(SearchPackage.id).where(SearchPackage.channel_id == c, SearchPackage.name == n))
        if found is not None:
            changes[found] = want[(c, n)]
    for pk, s in changes.items():
        session.execute(update(SearchPackage).where(SearchPackage.id == pk).values(max_score=s))
    return len(changes)


def scores_fingerprint(session: Session) -> str:
    """Changes whenever advisories, links or curation change (the vulns catalog generation, which every
    such writer bumps, and the newest link id): two indexed lookups."""
    from condavault.vulns import store

    return f"{store.get_generation(session)}:{session.scalar(select(func.max(VulnLinkRow.id)))}"


# -- files inside packages ------------------------------------------------------------------------------


def put_files(session: Session, package_sha256: str, files: list[tuple[str, str | None, int | None]]) -> int:
    """Store the file list of one package (nothing if it is already there: same bytes, same files)."""
    if (
        not files
        or session.scalar(select(SearchFile.path).where(SearchFile.package_sha256 == package_sha256).limit(1))
        is not None
    ):
        return 0
    rows = [{"package_sha256": package_sha256, "path": p, "sha256": s, "size": z} for p, s, z in files]
    # the same bytes ingested concurrently elsewhere write the same rows: keep one
    if session.get_bind().dialect.name == "postgresql":
        stmt: Any = pg_insert(SearchFile).on_conflict_do_nothing()
    else:
        stmt = insert(table(SearchFile)).prefix_with("OR IGNORE")
    for part in chunks(rows, 2000):
        session.execute(stmt, list(part))
    return len(rows)


def drop_orphan_files(session: Session, shas: Iterable[str] | None = None) -> int:
    """Delete the file lists of packages no record references any more."""
    if shas is None:
        shas = session.scalars(
            select(SearchFile.package_sha256)
            .distinct()
            .where(~select(Record.id).where(Record.sha256 == SearchFile.package_sha256).exists())
        ).all()
    n = 0
    for part in chunks(sorted(set(shas))):
        referenced = set(session.scalars(select(Record.sha256).where(Record.sha256.in_(part)).distinct()))
        drop = [s for s in part if s not in referenced]
        if drop:
            session.execute(delete(SearchFile).where(SearchFile.package_sha256.in_(drop)))
            n += len(drop)
    return n


def records_without_files(session: Session, after_id: int, limit: int) -> list[tuple[int, str, str, str]]:
    """(id, sha256, subdir, filename) of records with a stored archive whose file list is missing."""
    return [
        tuple(r)  # type: ignore[misc]
        for r in session.execute(
            select(Record.id, Record.sha256, Record.subdir, Record.filename)
            .where(
                Record.id > after_id,
                Record.has_blob.is_(True),
                Record.sha256.is_not(None),
                ~select(SearchFile.path).where(SearchFile.package_sha256 == Record.sha256).exists(),
            )
            .order_by(Record.id)
            .limit(limit)
        )
    ]


__all__ = [
    "drop_orphan_files",
    "put_files",
    "rebuild_trigrams",
    "refresh_scores",
    "similarity",
    "sync_channel",
    "trigrams",
]
