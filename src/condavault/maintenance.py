"""``condavault check``: every blob against its record, every index against its records."""

from __future__ import annotations

import hashlib
from typing import Any

from rich.progress import Progress
from sqlalchemy import select

from condavault.channels.models import Channel, Record
from condavault.channels.records import mark_blobs_missing
from condavault.config import Settings
from condavault.context import Context
from condavault.indexing.dirty import mark_dirty
from condavault.indexing.models import PublishedFile, ShardBlob, SubdirState

ORPHAN_MIN_AGE = 3600.0  # seconds: younger unreferenced blobs may belong to a write still under way


def _sha256(path: Any) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def run_check(settings: Settings, *, repair: bool = False, progress: bool = True) -> dict[str, Any]:
    ctx = Context.build(settings, start_jobs=False)
    try:
        return _check(ctx, repair, progress)
    finally:
        ctx.close()


def _check(ctx: Context, repair: bool, progress: bool) -> dict[str, Any]:
    missing: list[str] = []
    corrupt: list[str] = []
    stale: list[str] = []
    with ctx.db.session() as s:
        rows = s.execute(
            select(Channel.name, Record.subdir, Record.filename, Record.sha256, Record.size, Record.id)
            .join(Channel, Channel.id == Record.channel_id)
            .where(Record.has_blob.is_(True))
        ).all()
        referenced = {r[3] for r in rows if r[3]}
        referenced |= set(s.scalars(select(PublishedFile.sha256)))
        referenced |= set(s.scalars(select(ShardBlob.sha256)))
        states = s.execute(
            select(Channel.name, SubdirState.channel_id, SubdirState.subdir, SubdirState.change_seq,
                   SubdirState.indexed_seq).join(Channel, Channel.id == SubdirState.channel_id)
        ).all()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("verifying blobs", total=len(rows))
        for name, subdir, fn, sha, size, rec_id in rows:
            bar.advance(task)
            where = f"{name}/{subdir}/{fn}"
            path = ctx.blobs.local_path(sha or "")
            if not sha or not path.is_file():
                missing.append(where)
                if repair:
                    with ctx.db.write_session() as s:  # keep the record, mark its bytes as absent
                        mark_blobs_missing(s, [rec_id])
                continue
            if path.stat().st_size != size or _sha256(path) != sha:
                corrupt.append(where)
                if repair:
                    path.unlink()
                    with ctx.db.write_session() as s:
                        mark_blobs_missing(s, [rec_id])
    for name, cid, subdir, change, indexed in states:
        if change > indexed:
            stale.append(f"{name}/{subdir} (change {change}, indexed {indexed})")
            if repair:
                with ctx.db.write_session() as s:
                    mark_dirty(s, cid, subdir, None)
                ctx.indexer.index_subdir(cid, subdir)
    orphans = [h for h in ctx.blobs.iter_hashes() if h not in referenced]
    leftovers = ctx.blobs.stale_temp_files()  # temp files of writes a killed process never finished
    if repair:
        for h in orphans:  # re-checked under the blob lock: an ingest of the same bytes may be under way,
            ctx.ingestor.guard.delete_if_unreferenced(h, min_age=ORPHAN_MIN_AGE)  # or an index being published
        for path in leftovers:
            path.unlink(missing_ok=True)
        for cid in {c for _, c, _, _, _ in states}:
            ctx.indexer.publish_extras(cid)
    problems = len(missing) + len(corrupt) + len(stale)
    return {
        "records_checked": len(rows),
        "missing_blobs": missing,
        "corrupt_blobs": corrupt,
        "stale_indexes": stale,
        "orphan_blobs": len(orphans),
        "stale_temp_files": len(leftovers),
        "problems": problems,
        "repaired": repair,
    }
