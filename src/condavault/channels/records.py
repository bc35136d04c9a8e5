"""Record operations: insert (from ingest or metadata-only import), list, remove, copy, move."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

from condavault.channels import depends
from condavault.channels.models import Channel, Record
from condavault.db import statistics
from condavault.db.base import table, utcnow
from condavault.errors import Conflict, NotFound
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.indexing.patches import PatchSet
from condavault.packages.metadata import record_json

T = TypeVar("T")
RACE_RETRIES = 5


@lru_cache(maxsize=64)
def _patches(text: str | None) -> PatchSet:
    return PatchSet.from_text(text)


def subdir_patches(session: Session, channel_id: int, subdir: str) -> PatchSet:
    state = get_state(session, channel_id, subdir, create=False)
    return _patches(state.patch_instructions if state else None)


class Fragment(NamedTuple):
    """A record as published: its JSON in the index, whether a patch removes it, and the patched record
    (empty when removed) that the dependants index (``channels.depends``) reads, so a patched ``depends``
    is what a package page's dependants follow."""

    json: str
    removed: bool
    view: dict[str, Any]


def make_fragment(filename: str, record: dict[str, Any], indexed_timestamp: int, patches: PatchSet) -> Fragment:
    """The published (patched) form of a record (one application of the patches)."""
    patched, removed = patches.apply(filename, record)
    out = dict(patched)
    out["indexed_timestamp"] = indexed_timestamp  # CEP 47: never patched
    return Fragment(record_json(out), removed, {} if removed else patched)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Outcome:
    subdir: str
    filename: str
    status: str  # "created" | "unchanged" | "replaced"


@dataclass
class NewRecord:
    """One record for :func:`put_records` (what ``put_record`` takes as arguments)."""

    subdir: str
    filename: str
    record: dict[str, Any]
    about: dict[str, Any] | None = None
    run_exports: dict[str, Any] | None = None
    paths_summary: dict[str, bool] | None = None
    has_blob: bool = True
    source_url: str | None = None
    force: bool = False
    uploaded_by: str | None = None
    indexed_timestamp: int | None = None


def put_record(
    session: Session,
    channel: Channel,
    subdir: str,
    filename: str,
    record: dict[str, Any],
    **kw: Any,
) -> Outcome:
    """Insert one record (see :func:`put_records`)."""
    return put_records(session, channel, [NewRecord(subdir, filename, record, **kw)])[0]


@dataclass
class _Existing:
    id: int | None  # None: inserted by this batch (not yet in the table)
    sha256: str | None
    has_blob: bool
    name: str


def put_records(
    session: Session, channel: Channel, entries: list[NewRecord], *, dirty: dict[str, set[str]] | None = None
) -> list[Outcome]:
    """Insert records in one go: one lookup of the existing rows, one batched INSERT (Core, executemany),
    and each touched subdir marked dirty once. Same bytes again is a no-op; other bytes are a conflict
    (raised: nothing of the batch is written) unless ``force``, which replaces the row.

    ``dirty`` given: the changed names are added to it (subdir -> names) and the caller marks them with
    ``indexing.dirty.mark_dirty`` itself, as the last statement of its transaction -- marking takes the
    subdir's row lock, which concurrent writers of the subdir then wait for until the commit.

    Concurrent writers of the same filename (PostgreSQL lets both pass the lookup) are settled in a
    savepoint: the loser of the unique constraint looks again and ends as ``unchanged``, a conflict,
    or (``force``) a replacement -- never a database error."""
    return _settle_races(session, channel.name, lambda: _put_records(session, channel, entries, dirty))


def _settle_races(session: Session, channel: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` in a savepoint, again after losing a unique-constraint race (or after the row a
    ``force`` replaces was replaced by someone else first); a race lost every time is a 409."""
    for _ in range(RACE_RETRIES):
        try:
            with session.begin_nested():
                return attempt()
        except (IntegrityError, StaleDataError):
            session.expire_all()
    raise Conflict(
        f"concurrent writers kept changing the same files in channel {channel!r}; retry",
        code="concurrent_change",
        channel=channel,
    )


def _put_records(
    session: Session, channel: Channel, entries: list[NewRecord], dirty: dict[str, set[str]] | None
) -> list[Outcome]:
    by_subdir: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        by_subdir[e.subdir].add(e.filename)
    existing: dict[tuple[str, str], _Existing] = {}
    for sd, fns in by_subdir.items():
        ordered = sorted(fns)
        for i in range(0, len(ordered), 500):
            q = select(Record.id, Record.filename, Record.sha256, Record.has_blob, Record.name).where(
                Record.channel_id == channel.id, Record.subdir == sd, Record.filename.in_(ordered[i : i + 500])
            )
            for rid, fn, sha, has_blob, name in session.execute(q):
                existing[(sd, fn)] = _Existing(rid, sha, has_blob, name)
    patches = {sd: subdir_patches(session, channel.id, sd) for sd in by_subdir}
    inserts: dict[tuple[str, str], dict[str, Any]] = {}
    inserted: dict[tuple[str, str], dict[str, Any]] = {}  # the parsed record of each insert
    replaced: list[int] = []
    got_blob: list[int] = []
    names: dict[str, set[str]] = defaultdict(set)
    outcomes: list[Outcome] = []
    for e in entries:
        key = (e.subdir, e.filename)
        cur = existing.get(key)
        sha256 = e.record.get("sha256")
        if cur is not None:
            if cur.sha256 == sha256 and sha256 is not None:
                if e.has_blob and not cur.has_blob and cur.id is not None:  # a passive record's bytes arrived
                    got_blob.append(cur.id)
                    cur.has_blob = True
                outcomes.append(Outcome(e.subdir, e.filename, "unchanged"))
                continue
            if not e.force:
                raise Conflict(
                    f"{e.subdir}/{e.filename} already exists in channel {channel.name!r} with different content",
                    code="filename_conflict",
                    channel=channel.name,
                    filename=e.filename,
                    existing_sha256=cur.sha256,
                )
            names[e.subdir].add(cur.name)
            if cur.id is not None:
                replaced.append(cur.id)
        row, inserted[key] = _new_row(channel.id, e, patches[e.subdir])
        inserts[key] = row
        existing[key] = _Existing(None, sha256, e.has_blob, row["name"])
        names[e.subdir].add(row["name"])
        outcomes.append(Outcome(e.subdir, e.filename, "replaced" if cur is not None else "created"))
    for i in range(0, len(replaced), 500):
        chunk = replaced[i : i + 500]
        gone = cast("CursorResult[Any]", session.execute(delete(Record).where(Record.id.in_(chunk))))
        if gone.rowcount != len(chunk):
            raise StaleDataError("a record this batch replaces was replaced meanwhile")  # settled by a retry
    for i in range(0, len(got_blob), 500):
        session.execute(update(Record).where(Record.id.in_(got_blob[i : i + 500])).values(has_blob=True))
    _insert(session, list(inserts.values()), list(inserted.values()))
    for sd, ns in names.items():
        if dirty is None:
            mark_dirty(session, channel.id, sd, ns)
        else:
            dirty.setdefault(sd, set()).update(ns)
    return outcomes


# ids for a PostgreSQL insert, in one short statement
_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('records', 'id')) FROM generate_series(1, :n)")


def _insert(session: Session, rows: list[dict[str, Any]], records: list[dict[str, Any]] | None = None) -> None:
    """INSERT record rows (batched) and their dependency names (``channels.depends``); ``records``: the
    parsed record of each row when the caller has it (else the row's ``record`` text is parsed).

    PostgreSQL: the ids come from the sequence first and the rows go as a plain executemany (psycopg
    pipelines it and parses the statement once); an INSERT ... RETURNING of many rows is one statement
    of 24 parameters a row that psycopg parses anew each time (about half the CPU of storing a request
    of 64 files). SQLite: a plain executemany and one SELECT of the new ids when the rows share a subdir, else
    one INSERT ... RETURNING."""
    t = table(Record)
    conn = session.connection()
    dialect = conn.dialect.name
    statistics.note_growth(session, "records", len(rows))
    stmt = t.insert() if dialect == "postgresql" else t.insert().returning(t.c.id, sort_by_parameter_order=True)
    for i in range(0, len(rows), 5000):
        chunk = rows[i : i + 5000]
        if dialect == "postgresql":
            ids = list(conn.execute(_NEXT_IDS, {"n": len(chunk)}).scalars())
            conn.execute(stmt, [{**row, "id": rid} for row, rid in zip(chunk, ids, strict=True)])
        elif dialect == "sqlite" and len({(r["channel_id"], r["subdir"]) for r in chunk}) == 1:
            # SQLite runs an ordered INSERT .. RETURNING one row at a time: a plain executemany and one
            # SELECT of the new ids is ~5x cheaper (issue 15: 3.8 M-record mirrors)
            conn.execute(t.insert(), chunk)
            by_fn = dict(
                conn.execute(
                    select(Record.filename, Record.id).where(
                        Record.channel_id == chunk[0]["channel_id"],
                        Record.subdir == chunk[0]["subdir"],
                        Record.filename.in_([r["filename"] for r in chunk]),
                    )
                ).all()
            )
            ids = [by_fn[r["filename"]] for r in chunk]
        else:
            ids = list(conn.execute(stmt, chunk).scalars())
        parsed = records[i : i + 5000] if records is not None else [depends.record_dict(r["record"]) for r in chunk]
        depends.write(
            session,
            (
                d
                for rid, row, rec in zip(ids, chunk, parsed, strict=True)
                for d in depends.depends_rows(rid, row["channel_id"], row["name"], rec)
            ),
        )


def _new_row(channel_id: int, e: NewRecord, patches: PatchSet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row of a new record, and the record as clients see it (``Fragment.view``)."""
    record = e.record
    ts = e.indexed_timestamp or now_ms()
    fragment, removed, view = make_fragment(e.filename, record, ts, patches)
    row = {
        "channel_id": channel_id,
        "subdir": e.subdir,
        "filename": e.filename,
        "name": record["name"],
        "version": record["version"],
        "build": record["build"],
        "build_number": int(record.get("build_number") or 0),
        "sha256": record.get("sha256"),
        "md5": record.get("md5"),
        "size": record.get("size"),
        "timestamp": record.get("timestamp"),
        "license": (str(record["license"])[:500] if record.get("license") else None),
        "record": record_json(record),
        "fragment": fragment,
        "about": json.dumps(e.about) if e.about else None,
        "run_exports": json.dumps(e.run_exports) if e.run_exports is not None else None,
        "paths_summary": json.dumps(e.paths_summary) if e.paths_summary else None,
        "indexed_timestamp": ts,
        "has_blob": e.has_blob,
        "source_url": e.source_url,
        "removed": removed,
        "created_at": utcnow(),
        "uploaded_by": e.uploaded_by,
    }
    return row, view


def find_record(session: Session, channel: Channel, subdir: str, filename: str) -> Record | None:
    return session.scalar(
        select(Record).where(Record.channel_id == channel.id, Record.subdir == subdir, Record.filename == filename)
    )


def get_record(session: Session, channel: Channel, subdir: str, filename: str) -> Record:
    rec = session.scalar(
        select(Record).where(Record.channel_id == channel.id, Record.subdir == subdir, Record.filename == filename)
    )
    if rec is None:
        raise NotFound(
            f"{subdir}/{filename} not found in channel {channel.name!r}",
            code="file_not_found",
            channel=channel.name,
            filename=filename,
        )
    return rec


def list_records(
    session: Session,
    channel: Channel,
    *,
    subdir: str | None = None,
    name: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[Record]:
    q = select(Record).where(Record.channel_id == channel.id)
    if subdir:
        q = q.where(Record.subdir == subdir)
    if name:
        q = q.where(Record.name == name)
    q = q.order_by(Record.subdir, Record.filename).limit(limit).offset(offset)
    return list(session.scalars(q))


def resolve_files(session: Session, channel: Channel, specs: list[str]) -> list[Record]:
    """Files named ``subdir/filename`` or a bare filename (searched across subdirs)."""
    out: list[Record] = []
    for spec in specs:
        if "/" in spec:
            subdir, fn = spec.split("/", 1)
            out.append(get_record(session, channel, subdir, fn))
            continue
        rows = list(session.scalars(select(Record).where(Record.channel_id == channel.id, Record.filename == spec)))
        if not rows:
            raise NotFound(
                f"{spec} not found in channel {channel.name!r}",
                code="file_not_found",
                channel=channel.name,
                filename=spec,
            )
        out.extend(rows)
    return out


def remove_records(session: Session, channel: Channel, rows: list[Record]) -> list[str]:
    touched: dict[str, set[str]] = {}
    removed = []
    for row in rows:
        touched.setdefault(row.subdir, set()).add(row.name)
        removed.append(f"{row.subdir}/{row.filename}")
        session.delete(row)
    session.flush()
    for subdir, names in touched.items():
        mark_dirty(session, channel.id, subdir, names)
    return removed


def copy_records(
    session: Session,
    source: Channel,
    target: Channel,
    rows: list[Record],
    *,
    move: bool = False,
    force: bool = False,
    actor: str | None = None,
) -> dict[str, list[str]]:
    """Copy (or move) records between channels: row operations, blobs are shared."""
    done: dict[str, list[str]] = {"copied": [], "unchanged": []}
    entries = [
        NewRecord(
            row.subdir,
            row.filename,
            json.loads(row.record),
            about=json.loads(row.about) if row.about else None,
            run_exports=json.loads(row.run_exports) if row.run_exports is not None else None,
            paths_summary=json.loads(row.paths_summary) if row.paths_summary else None,
            has_blob=row.has_blob,
            source_url=row.source_url,
            force=force,
            uploaded_by=actor,
        )
        for row in rows
    ]
    outcomes = put_records(session, target, entries) if entries else []
    for row, outcome in zip(rows, outcomes, strict=True):
        done["unchanged" if outcome.status == "unchanged" else "copied"].append(f"{row.subdir}/{row.filename}")
    if rows and source.id != target.id:
        from condavault.signing.carry import copy_trust

        session.flush()
        copy_trust(session, target.id, rows)  # carried signatures and sidecars go with the file
    if move and source.id != target.id:
        remove_records(session, source, rows)
    return done


def remove_by_keys(session: Session, channel: Channel, keys: list[tuple[str, str]]) -> list[str]:
    """Remove the records named ``(subdir, filename)`` that exist (a mirror dropping files)."""
    removed: list[str] = []
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        rows: list[Record] = []
        for sd in {k[0] for k in chunk}:
            fns = [fn for d, fn in chunk if d == sd]
            rows.extend(
                session.scalars(
                    select(Record).where(Record.channel_id == channel.id, Record.subdir == sd, Record.filename.in_(fns))
                )
            )
        removed.extend(remove_records(session, channel, rows))
    return removed


def mark_blobs_missing(session: Session, record_ids: list[int]) -> None:
    """The bytes of these records are gone (``check --repair``): keep the records, served as absent."""
    for i in range(0, len(record_ids), 500):
        session.execute(update(Record).where(Record.id.in_(record_ids[i : i + 500])).values(has_blob=False))


_MOVED = {"Entries", "IMPORT_BATCH", "import_repodata", "refresh_records", "apply_patches", "sync_records"}


def __getattr__(name: str) -> Any:
    """The bulk operations live in ``channels.record_sync``; older importers still find them here."""
    if name in _MOVED:
        from condavault.channels import record_sync

        return getattr(record_sync, name)
    raise AttributeError(name)
