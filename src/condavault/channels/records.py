"""Record operations: insert (from ingest or metadata-only import), list, remove, copy, move."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

from condavault.channels import depends
from condavault.channels.models import Channel, Record
from condavault.db.base import table, utcnow
from condavault.errors import Conflict, InvalidIndexJson, InvalidRequest, NotFound
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.indexing.models import SubdirState
from condavault.indexing.patches import PatchSet
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.metadata import record_json
from condavault.packages.validation import check_record

T = TypeVar("T")
RACE_RETRIES = 5


@lru_cache(maxsize=64)
def _patches(text: str | None) -> PatchSet:
    return PatchSet.from_text(text)


def subdir_patches(session: Session, channel_id: int, subdir: str) -> PatchSet:
    state = get_state(session, channel_id, subdir, create=False)
    return _patches(state.patch_instructions if state else None)


def make_fragment(filename: str, record: dict[str, Any], indexed_timestamp: int, patches: PatchSet) -> tuple[str, bool]:
    """The published (patched) JSON of a record and whether a patch removes it."""
    patched, removed = patches.apply(filename, record)
    patched = dict(patched)
    patched["indexed_timestamp"] = indexed_timestamp  # CEP 47: never patched
    return record_json(patched), removed


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


def put_records(session: Session, channel: Channel, entries: list[NewRecord]) -> list[Outcome]:
    """Insert records in one go: one lookup of the existing rows, one batched INSERT (Core, executemany),
    and each touched subdir marked dirty once. Same bytes again is a no-op; other bytes are a conflict
    (raised: nothing of the batch is written) unless ``force``, which replaces the row.

    Concurrent writers of the same filename (PostgreSQL lets both pass the lookup) are settled in a
    savepoint: the loser of the unique constraint looks again and ends as ``unchanged``, a conflict,
    or (``force``) a replacement -- never a database error."""
    return _settle_races(session, channel.name, lambda: _put_records(session, channel, entries))


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


def _put_records(session: Session, channel: Channel, entries: list[NewRecord]) -> list[Outcome]:
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
        row = _new_row(channel.id, e, patches[e.subdir])
        inserts[key] = row
        inserted[key] = e.record
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
        mark_dirty(session, channel.id, sd, ns)
    return outcomes


def _insert(session: Session, rows: list[dict[str, Any]], records: list[dict[str, Any]] | None = None) -> None:
    """INSERT record rows (batched) and their dependency names (``channels.depends``); ``records``: the
    parsed record of each row when the caller has it (else the row's ``record`` text is parsed)."""
    t = table(Record)
    stmt = t.insert().returning(t.c.id, sort_by_parameter_order=True)
    sqlite = session.get_bind().dialect.name == "sqlite"
    for i in range(0, len(rows), 5000):
        chunk = rows[i : i + 5000]
        if sqlite and len({(r["channel_id"], r["subdir"]) for r in chunk}) == 1:
            # SQLite runs an ordered INSERT .. RETURNING one row at a time: a plain executemany and one
            # SELECT of the new ids is ~5x cheaper (issue 15: 3.8 M-record mirrors)
            session.connection().execute(t.insert(), chunk)
            by_fn = dict(
                session.execute(
                    select(Record.filename, Record.id).where(
                        Record.channel_id == chunk[0]["channel_id"],
                        Record.subdir == chunk[0]["subdir"],
                        Record.filename.in_([r["filename"] for r in chunk]),
                    )
                ).all()
            )
            ids = [by_fn[r["filename"]] for r in chunk]
        else:
            ids = list(session.connection().execute(stmt, chunk).scalars().all())
        parsed = records[i : i + 5000] if records is not None else [depends.record_dict(r["record"]) for r in chunk]
        depends.write(
            session,
            (
                d
                for rid, row, rec in zip(ids, chunk, parsed, strict=True)
                for d in depends.depends_rows(rid, row["channel_id"], row["name"], rec)
            ),
        )


def _new_row(channel_id: int, e: NewRecord, patches: PatchSet) -> dict[str, Any]:
    record = e.record
    ts = e.indexed_timestamp or now_ms()
    fragment, removed = make_fragment(e.filename, record, ts, patches)
    return {
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


Entries = Callable[[], Iterable[tuple[str, str, Any]]]  # (section, filename, record); callable again on a retry
IMPORT_BATCH = 2000


def import_repodata(
    session: Session,
    channel: Channel,
    subdir: str,
    repodata: dict[str, Any] | Entries,
    *,
    base_url: str | None = None,
    skip_existing: bool = True,
    skip_invalid: bool = False,
) -> dict[str, int]:
    """Metadata-only import: one record per entry of ``packages``/``packages.conda``, no bytes yet.

    ``repodata`` is a parsed document or a callable giving its entries one at a time
    (:func:`condavault.channels.repodata_stream.iter_records` over a spooled body): records are
    checked and inserted a batch at a time, so memory does not grow with the document. ``base_url``
    (optional) is where the bytes can be fetched later (passive mirrors). Every record is validated
    like an uploaded index.json (``packages.validation``); a bad one is refused with a 400 naming its
    field, or counted as ``invalid`` and left out with ``skip_invalid`` (an upstream's). All or
    nothing: the caller's transaction holds every batch.
    """
    check_subdir(subdir)
    entries = repodata if callable(repodata) else _dict_entries(repodata)
    return _settle_races(
        session,
        channel.name,
        lambda: _import_repodata(session, channel, subdir, entries(), base_url, skip_existing, skip_invalid),
    )


def _dict_entries(repodata: dict[str, Any]) -> Entries:
    def entries() -> Iterator[tuple[str, str, Any]]:
        for key in ("packages", "packages.conda"):
            section = repodata.get(key) or {}
            if not isinstance(section, dict):
                raise InvalidRequest(f"{key!r} must be an object", code="invalid_repodata")
            for fn, rec in section.items():
                yield key, fn, rec

    return entries


def _import_repodata(
    session: Session,
    channel: Channel,
    subdir: str,
    entries: Iterable[tuple[str, str, Any]],
    base_url: str | None,
    skip_existing: bool,
    skip_invalid: bool,
) -> dict[str, int]:
    counts = {"created": 0, "unchanged": 0, "replaced": 0, "invalid": 0}
    patches = subdir_patches(session, channel.id, subdir)
    names: set[str] = set()
    ts = now_ms()
    batch: dict[str, dict[str, Any]] = {}

    def flush() -> None:
        fns = sorted(batch)
        existing = (
            {
                fn: sha
                for fn, sha in session.execute(
                    select(Record.filename, Record.sha256).where(
                        Record.channel_id == channel.id, Record.subdir == subdir, Record.filename.in_(fns)
                    )
                )
            }
            if fns
            else {}
        )
        rows = []
        recs: list[dict[str, Any]] = []
        for fn in fns:
            rec = batch[fn]
            if fn in existing:
                if existing[fn] != rec.get("sha256") and not skip_existing:
                    raise Conflict(
                        f"{subdir}/{fn} already exists with different content",
                        code="filename_conflict",
                        channel=channel.name,
                        filename=fn,
                    )
                counts["unchanged"] += 1
                continue
            rec = {k: v for k, v in rec.items() if k != "indexed_timestamp"}
            try:
                check_record(rec, source="repodata", filename=fn)
            except InvalidIndexJson:
                if not skip_invalid:
                    raise
                counts["invalid"] += 1
                continue
            rec.setdefault("subdir", subdir)
            fragment, removed = make_fragment(fn, rec, ts, patches)
            rows.append(
                {
                    "channel_id": channel.id,
                    "subdir": subdir,
                    "filename": fn,
                    "name": rec["name"],
                    "version": str(rec["version"]),
                    "build": str(rec["build"]),
                    "build_number": int(rec.get("build_number") or 0),
                    "sha256": rec.get("sha256"),
                    "md5": rec.get("md5"),
                    "size": rec.get("size"),
                    "timestamp": rec.get("timestamp"),
                    "license": str(rec["license"])[:500] if rec.get("license") else None,
                    "record": record_json(rec),
                    "fragment": fragment,
                    "run_exports": None,
                    "indexed_timestamp": ts,
                    "has_blob": False,
                    "source_url": f"{base_url.rstrip('/')}/{fn}" if base_url else None,
                    "removed": removed,
                }
            )
            recs.append(rec)
            names.add(rec["name"])
            counts["created"] += 1
        if rows:
            _insert(session, rows, recs)
        batch.clear()

    for _section, fn, rec in entries:
        parse_filename(fn)
        if not isinstance(rec, dict) or not all(k in rec for k in ("name", "version", "build")):
            raise InvalidRequest(f"record {fn!r} lacks name/version/build", code="invalid_repodata", filename=fn)
        batch[fn] = rec  # a filename given twice: the last one, as a JSON parser keeps
        if len(batch) >= IMPORT_BATCH:
            flush()
    flush()
    if names:
        mark_dirty(session, channel.id, subdir, names)
    else:
        get_state(session, channel.id, subdir)
    return counts


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


def refresh_records(session: Session, channel_id: int, updates: dict[tuple[str, str], dict[str, Any]]) -> int:
    """Same bytes, new upstream metadata (a mirror's repodata patch): merge ``updates[(subdir, filename)]``
    into each stored record and re-publish it. Returns the number of records changed."""
    n = 0
    by_subdir: dict[str, list[str]] = defaultdict(list)
    for sd, fn in updates:
        by_subdir[sd].append(fn)
    for sd, fns in by_subdir.items():
        patches = subdir_patches(session, channel_id, sd)
        names = set()
        deps: dict[int, list[dict[str, Any]]] = {}
        for i in range(0, len(fns), 500):
            rows = session.scalars(
                select(Record).where(
                    Record.channel_id == channel_id, Record.subdir == sd, Record.filename.in_(fns[i : i + 500])
                )
            )
            for row in rows:
                rec = json.loads(row.record)
                rec.update(updates[(sd, row.filename)])
                row.record = record_json(rec)
                deps[row.id] = depends.depends_rows(row.id, channel_id, row.name, rec)
                row.fragment, row.removed = make_fragment(row.filename, rec, row.indexed_timestamp, patches)
                row.license = str(rec["license"])[:500] if rec.get("license") else None
                names.add(row.name)
                n += 1
        session.flush()
        depends.write(session, (d for ds in deps.values() for d in ds), replace=deps)
        if names:
            mark_dirty(session, channel_id, sd, names)
    return n


PATCH_BATCH = 2000


def apply_patches(session: Session, channel_id: int, subdir: str, body: dict[str, Any] | None) -> int:
    """Store a subdir's ``patch_instructions.json`` (None or empty: none) and re-publish every record it
    changes. Reads the subdir in batches of ``PATCH_BATCH`` rows (by id) and writes only the changed
    ones, so memory stays bounded however large the subdir. Returns the number of records changed."""
    patches = PatchSet.parse(body or {})
    state = get_state(session, channel_id, subdir)
    assert state is not None
    state.patch_instructions = json.dumps(body) if patches else None
    n = 0
    last_id = 0
    cols = (Record.id, Record.filename, Record.record, Record.indexed_timestamp, Record.fragment, Record.removed)
    while True:
        rows = session.execute(
            select(*cols)
            .where(Record.channel_id == channel_id, Record.subdir == subdir, Record.id > last_id)
            .order_by(Record.id)
            .limit(PATCH_BATCH)
        ).all()
        if not rows:
            break
        last_id = rows[-1][0]
        changed = []
        for rid, filename, record, ts, fragment, removed in rows:
            frag, gone = make_fragment(filename, json.loads(record), ts, patches)
            if frag != fragment or gone != removed:
                changed.append({"b_id": rid, "b_fragment": frag, "b_removed": gone})
        if changed:
            t = table(Record)
            stmt = (
                update(t)
                .where(t.c.id == bindparam("b_id"))
                .values(fragment=bindparam("b_fragment"), removed=bindparam("b_removed"))
            )
            session.connection().execute(stmt, changed)
            n += len(changed)
        del rows, changed
    mark_dirty(session, channel_id, subdir, None)
    return n


def mark_blobs_missing(session: Session, record_ids: list[int]) -> None:
    """The bytes of these records are gone (``check --repair``): keep the records, served as absent."""
    for i in range(0, len(record_ids), 500):
        session.execute(update(Record).where(Record.id.in_(record_ids[i : i + 500])).values(has_blob=False))


def sync_records(
    session: Session,
    channel: Channel,
    entries: list[NewRecord],
    patches: dict[str, str | None],
    *,
    removed: list[tuple[str, str]] = (),  # type: ignore[assignment]
    full: bool = False,
) -> set[str]:
    """Make a channel hold what another server's channel holds (an air-gap bundle, ``condavault.airgap``):
    each subdir's patch instructions, ``removed`` keys gone (``full``: every record not in ``entries``
    gone), ``entries`` written -- a record with the same bytes but other metadata is updated in place (its
    CVE links and curation stay), other bytes replace the row. Returns the subdirs that changed."""
    subdirs: set[str] = set()
    states = {
        st.subdir: st.patch_instructions
        for st in session.scalars(select(SubdirState).where(SubdirState.channel_id == channel.id))
    }
    for sd, text in patches.items():
        if sd not in states or (states[sd] or None) != (text or None):
            apply_patches(session, channel.id, sd, json.loads(text) if text else None)
            subdirs.add(sd)
    keys = set(removed)
    if full:
        wanted = {(e.subdir, e.filename) for e in entries}
        keys = {
            (sd, fn)
            for sd, fn in session.execute(select(Record.subdir, Record.filename).where(Record.channel_id == channel.id))
            if (sd, fn) not in wanted
        }
    if keys:
        remove_by_keys(session, channel, sorted(keys))
        subdirs.update(sd for sd, _ in keys)
    rest = _refresh_same_bytes(session, channel, entries, subdirs)
    if rest:
        put_records(session, channel, rest)
        subdirs.update(e.subdir for e in rest)
    return subdirs


def _refresh_same_bytes(
    session: Session, channel: Channel, entries: list[NewRecord], subdirs: set[str]
) -> list[NewRecord]:
    """Update in place the rows that hold the same bytes as an entry but other metadata; returns the
    entries still to insert (new, or other bytes)."""
    by_key = {(e.subdir, e.filename): e for e in entries}
    rest = dict(by_key)
    for sd in sorted({k[0] for k in by_key}):
        fns = sorted(fn for d, fn in by_key if d == sd)
        patches = subdir_patches(session, channel.id, sd)
        names: set[str] = set()
        deps: dict[int, list[dict[str, Any]]] = {}
        for i in range(0, len(fns), 500):
            rows = session.scalars(
                select(Record).where(
                    Record.channel_id == channel.id, Record.subdir == sd, Record.filename.in_(fns[i : i + 500])
                )
            )
            for row in rows:
                e = by_key[(sd, row.filename)]
                if row.sha256 != e.record.get("sha256"):
                    continue  # other bytes: put_records replaces the row (force)
                del rest[(sd, row.filename)]
                ts = e.indexed_timestamp or row.indexed_timestamp
                new = (
                    record_json(e.record),
                    json.dumps(e.about) if e.about else None,
                    json.dumps(e.run_exports) if e.run_exports is not None else None,
                    json.dumps(e.paths_summary) if e.paths_summary else None,
                    ts,
                    e.has_blob,
                )
                old = (row.record, row.about, row.run_exports, row.paths_summary, row.indexed_timestamp, row.has_blob)
                if new == old:
                    continue
                row.record, row.about, row.run_exports, row.paths_summary, row.indexed_timestamp = new[:5]
                row.has_blob = new[5]
                row.fragment, row.removed = make_fragment(row.filename, e.record, ts, patches)
                row.license = str(e.record["license"])[:500] if e.record.get("license") else None
                names.add(row.name)
                deps[row.id] = depends.depends_rows(row.id, channel.id, row.name, e.record)
        if names:
            session.flush()
            depends.write(session, (d for ds in deps.values() for d in ds), replace=deps)
            mark_dirty(session, channel.id, sd, names)
            subdirs.add(sd)
    return list(rest.values())
