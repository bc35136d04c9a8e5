"""Record operations that rewrite many records at once: metadata-only imports (``import_repodata``),
upstream metadata refreshes, patch instructions, and making a channel hold another server's records
(``sync_records``). The single-record operations and the insert path are in ``channels.records``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from condavault.channels import depends
from condavault.channels.models import Channel, Record
from condavault.channels.records import (
    NewRecord,
    _insert,
    _settle_races,
    make_fragment,
    now_ms,
    put_records,
    remove_by_keys,
    subdir_patches,
)
from condavault.db.base import table
from condavault.errors import Conflict, InvalidIndexJson, InvalidRequest
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.indexing.models import SubdirState
from condavault.indexing.patches import PatchSet
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.metadata import record_json
from condavault.packages.validation import check_record

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
            fragment, removed, view = make_fragment(fn, rec, ts, patches)
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
            recs.append(view)
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
                row.fragment, row.removed, view = make_fragment(row.filename, rec, row.indexed_timestamp, patches)
                deps[row.id] = depends.depends_rows(row.id, channel_id, row.name, view)
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
    cols = (
        Record.id,
        Record.filename,
        Record.record,
        Record.indexed_timestamp,
        Record.fragment,
        Record.removed,
        Record.name,
    )
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
        deps: dict[int, list[dict[str, Any]]] = {}
        for rid, filename, record, ts, fragment, removed, name in rows:
            rec = json.loads(record)
            frag, gone, view = make_fragment(filename, rec, ts, patches)
            if frag != fragment or gone != removed:
                changed.append({"b_id": rid, "b_fragment": frag, "b_removed": gone})
                deps[rid] = depends.depends_rows(rid, channel_id, name, view)
        if changed:
            t = table(Record)
            stmt = (
                update(t)
                .where(t.c.id == bindparam("b_id"))
                .values(fragment=bindparam("b_fragment"), removed=bindparam("b_removed"))
            )
            session.connection().execute(stmt, changed)
            depends.write(session, (d for ds in deps.values() for d in ds), replace=deps)
            n += len(changed)
        del rows, changed, deps
    mark_dirty(session, channel_id, subdir, None)
    return n


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
                row.fragment, row.removed, view = make_fragment(row.filename, e.record, ts, patches)
                row.license = str(e.record["license"])[:500] if e.record.get("license") else None
                names.add(row.name)
                deps[row.id] = depends.depends_rows(row.id, channel.id, row.name, view)
        if names:
            session.flush()
            depends.write(session, (d for ds in deps.values() for d in ds), replace=deps)
            mark_dirty(session, channel.id, sd, names)
            subdirs.add(sd)
    return list(rest.values())
