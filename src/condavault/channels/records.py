"""Record operations: insert (from ingest or metadata-only import), list, remove, copy, move."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.errors import Conflict, InvalidRequest, NotFound
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.indexing.patches import PatchSet
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.metadata import record_json


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


@dataclass
class Outcome:
    record: Record
    status: str  # "created" | "unchanged" | "replaced"


def put_record(
    session: Session,
    channel: Channel,
    subdir: str,
    filename: str,
    record: dict[str, Any],
    *,
    about: dict[str, Any] | None = None,
    run_exports: dict[str, Any] | None = None,
    paths_summary: dict[str, bool] | None = None,
    has_blob: bool = True,
    source_url: str | None = None,
    force: bool = False,
    uploaded_by: str | None = None,
    indexed_timestamp: int | None = None,
) -> Outcome:
    """Insert one record. Same bytes again is a no-op; other bytes are a conflict unless ``force``."""
    sha256 = record.get("sha256")
    existing = session.scalar(
        select(Record).where(Record.channel_id == channel.id, Record.subdir == subdir, Record.filename == filename)
    )
    if existing is not None:
        if existing.sha256 == sha256 and sha256 is not None:
            if has_blob and not existing.has_blob:  # a passive record whose bytes just arrived
                existing.has_blob = True
                session.flush()
            return Outcome(existing, "unchanged")
        if not force:
            raise Conflict(
                f"{subdir}/{filename} already exists in channel {channel.name!r} with different content",
                code="filename_conflict",
                channel=channel.name,
                filename=filename,
                existing_sha256=existing.sha256,
            )
        session.delete(existing)
        session.flush()
    ts = indexed_timestamp or now_ms()
    fragment, removed = make_fragment(filename, record, ts, subdir_patches(session, channel.id, subdir))
    row = Record(
        channel_id=channel.id,
        subdir=subdir,
        filename=filename,
        name=record["name"],
        version=record["version"],
        build=record["build"],
        build_number=int(record.get("build_number") or 0),
        sha256=sha256,
        md5=record.get("md5"),
        size=record.get("size"),
        timestamp=record.get("timestamp"),
        license=(str(record["license"])[:500] if record.get("license") else None),
        record=record_json(record),
        fragment=fragment,
        about=json.dumps(about) if about else None,
        run_exports=json.dumps(run_exports) if run_exports is not None else None,
        paths_summary=json.dumps(paths_summary) if paths_summary else None,
        indexed_timestamp=ts,
        has_blob=has_blob,
        source_url=source_url,
        removed=removed,
        uploaded_by=uploaded_by,
    )
    session.add(row)
    session.flush()
    mark_dirty(session, channel.id, subdir, [row.name])
    return Outcome(row, "replaced" if existing is not None else "created")


def import_repodata(
    session: Session,
    channel: Channel,
    subdir: str,
    repodata: dict[str, Any],
    *,
    base_url: str | None = None,
    skip_existing: bool = True,
) -> dict[str, int]:
    """Metadata-only import: one record per entry of ``packages``/``packages.conda``, no bytes yet.

    ``base_url`` (optional) is where the bytes can be fetched later (passive mirrors).
    """
    check_subdir(subdir)
    counts = {"created": 0, "unchanged": 0, "replaced": 0}
    existing = {
        fn: sha
        for fn, sha in session.execute(
            select(Record.filename, Record.sha256).where(Record.channel_id == channel.id, Record.subdir == subdir)
        )
    }
    patches = subdir_patches(session, channel.id, subdir)
    names: set[str] = set()
    ts = now_ms()
    rows = []
    for key in ("packages", "packages.conda"):
        for fn, rec in (repodata.get(key) or {}).items():
            parse_filename(fn)
            if not isinstance(rec, dict) or not all(k in rec for k in ("name", "version", "build")):
                raise InvalidRequest(f"record {fn!r} lacks name/version/build", code="invalid_repodata", filename=fn)
            if fn in existing:
                if existing[fn] != rec.get("sha256") and not skip_existing:
                    raise Conflict(f"{subdir}/{fn} already exists with different content", code="filename_conflict",
                                   channel=channel.name, filename=fn)
                counts["unchanged"] += 1
                continue
            rec = {k: v for k, v in rec.items() if k != "indexed_timestamp"}
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
            names.add(rec["name"])
            counts["created"] += 1
    if rows:
        for i in range(0, len(rows), 5000):
            session.execute(Record.__table__.insert(), rows[i : i + 5000])
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
    for row in rows:
        rec = json.loads(row.record)
        outcome = put_record(
            session,
            target,
            row.subdir,
            row.filename,
            rec,
            about=json.loads(row.about) if row.about else None,
            run_exports=json.loads(row.run_exports) if row.run_exports is not None else None,
            paths_summary=json.loads(row.paths_summary) if row.paths_summary else None,
            has_blob=row.has_blob,
            source_url=row.source_url,
            force=force,
            uploaded_by=actor,
        )
        done["unchanged" if outcome.status == "unchanged" else "copied"].append(f"{row.subdir}/{row.filename}")
    if move and source.id != target.id:
        remove_records(session, source, rows)
    return done
