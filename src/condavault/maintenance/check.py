"""``condavault check [--repair]``: safe to run beside a running server.

It verifies every package blob against its record, every published index file and shard against the
database's pointers, each subdir's shards against its records, and finds stale indexes, unreferenced
blobs and leftover temp files. ``--repair`` fixes what can be fixed without losing anything:

- a record whose bytes are missing becomes metadata-only (a passive mirror fetches them again); corrupt
  bytes are moved to ``blobs/.corrupt/`` (never deleted) and the record becomes metadata-only;
- a stale subdir, or one whose published files or shards are missing, corrupt or out of step with its
  records, is rebuilt in full (missing shards included), and channel-level files are republished;
- unreferenced blobs are deleted only under the rules of :mod:`condavault.maintenance.references`
  (older than the grace period, under the collection lock, after a fresh look at every pointer);
- temp files older than ``temp_grace_seconds`` are removed (younger ones may be in flight).
"""

from __future__ import annotations

import os
from typing import Any

from rich.progress import Progress
from sqlalchemy import select

from condavault.channels.models import Channel, Record
from condavault.channels.records import mark_blobs_missing
from condavault.config import Settings
from condavault.context import Context
from condavault.db import migrate
from condavault.indexing.dirty import mark_dirty
from condavault.indexing.models import SubdirState
from condavault.maintenance.references import all_referenced, collect, sweep_temp_files, temp_folders
from condavault.maintenance.verify import blob_state, check_index


def run_check(
    settings: Settings, *, repair: bool = False, progress: bool = True, grace: float | None = None
) -> dict[str, Any]:
    ctx = Context.build(settings, start_jobs=False)
    try:
        migrate.check(ctx.db.engine, settings.db_url)  # an empty or older database: a clear error, not a traceback
        return _check(ctx, repair, progress, settings.blob_grace_seconds if grace is None else grace)
    finally:
        ctx.close()


def _quarantine(ctx: Context, sha: str) -> None:
    path = ctx.blobs.local_path(sha)
    if path is None:  # a remote store has no side folder: the damaged object goes (re-fetch or re-upload)
        ctx.blobs.delete(sha)
        return
    folder = path.parents[2] / ".corrupt"
    folder.mkdir(exist_ok=True)
    try:
        os.replace(path, folder / sha)
    except FileNotFoundError:
        pass


def _check(ctx: Context, repair: bool, progress: bool, grace: float) -> dict[str, Any]:
    missing: list[str] = []
    corrupt: list[str] = []
    stale: list[str] = []
    with ctx.db.session() as s:
        rows = s.execute(
            select(Channel.name, Record.subdir, Record.filename, Record.sha256, Record.size, Record.id)
            .join(Channel, Channel.id == Record.channel_id)
            .where(Record.has_blob.is_(True))
        ).all()
        states = s.execute(
            select(
                Channel.name,
                SubdirState.channel_id,
                SubdirState.subdir,
                SubdirState.change_seq,
                SubdirState.indexed_seq,
            ).join(Channel, Channel.id == SubdirState.channel_id)
        ).all()
    rebuild: set[tuple[int, str]] = set()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("verifying package blobs", total=len(rows))
        for name, subdir, fn, sha, size, rec_id in rows:
            bar.advance(task)
            state = blob_state(ctx.blobs, sha, size)
            if state == "ok":
                continue
            (missing if state == "missing" else corrupt).append(f"{name}/{subdir}/{fn}")
            if repair:
                if state == "corrupt" and sha:
                    _quarantine(ctx, sha)
                with ctx.db.write_session() as s:  # keep the record, mark its bytes as absent
                    mark_blobs_missing(s, [rec_id])
        bar.update(task, description="verifying index files and shards")
        index = check_index(ctx.db, ctx.blobs)
        rebuild |= index.subdirs
        for name, cid, subdir, change, indexed in states:
            if change > indexed:
                stale.append(f"{name}/{subdir} (change {change}, indexed {indexed})")
                rebuild.add((cid, subdir))
        if repair:
            for sha in index.corrupt_shas:
                _quarantine(ctx, sha)
            _rebuild(ctx, rebuild, bar)
        referenced = all_referenced(ctx.db)
        candidates = [h for h in ctx.blobs.iter_hashes() if h not in referenced]
        deleted = kept_young = 0
        if repair and candidates:
            task = bar.add_task("collecting unreferenced blobs", total=len(candidates))
            deleted, kept_young = collect(ctx.db, ctx.ingestor.guard, candidates, grace, lambda n: bar.advance(task, n))
    leftovers = sweep_temp_files(
        ctx.blobs, ctx.settings.temp_grace_seconds, temp_folders(ctx.settings.data_dir), dry_run=not repair
    )
    problems = len(missing) + len(corrupt) + len(stale) + index.problems
    return {
        "records_checked": len(rows),
        "missing_blobs": missing,
        "corrupt_blobs": corrupt,
        "stale_indexes": stale,
        "missing_index_files": index.missing,
        "corrupt_index_files": index.corrupt,
        "mismatched_indexes": index.mismatched,
        "orphan_blobs": len(candidates),
        "orphan_blobs_deleted": deleted,
        "orphan_blobs_within_grace": kept_young,
        "stale_temp_files": leftovers,
        "problems": problems,
        "repaired": repair,
    }


def _rebuild(ctx: Context, subdirs: set[tuple[int, str]], bar: Progress) -> None:
    """Rebuild in full what is stale or damaged (a full run writes back every missing shard), then
    republish the channel-level files of every channel touched."""
    task = bar.add_task("rebuilding indexes", total=len(subdirs))
    channels = set()
    for cid, subdir in sorted(subdirs):
        channels.add(cid)
        if subdir:
            with ctx.db.write_session() as s:
                mark_dirty(s, cid, subdir, None)
            ctx.indexer.index_subdir(cid, subdir)
        bar.advance(task)
    for cid in sorted(channels):
        with ctx.db.session() as s:
            if s.get(Channel, cid) is None:
                continue
        ctx.indexer.publish_extras(cid, full=True)
