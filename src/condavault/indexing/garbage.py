"""Superseded index blobs, collected by the server itself (issue 15, finding 4).

Every publish replaces a subdir's ``repodata.json`` (and ``.zst``, the shard index, ``run_exports``,
the slow lane's files): without collection each upload left tens of megabytes behind at 100 k records
until someone ran ``condavault check --repair``. Now:

* :func:`record` notes the blob a pointer stopped pointing at (``superseded_blobs``), in the publish's
  own transaction; shards whose ``shard_blobs`` row expires (``shard_retention_days``) are noted too;
* a scheduled job (``index.collect``) hands the notes older than the retention to the one deletion path:
  :func:`condavault.maintenance.references.collect` (collection lock, grace by mtime) and
  :meth:`~condavault.channels.blobs.BlobGuard.delete_if_unreferenced` (no pointer, no live pin, under
  the per-blob lock). A blob that is current again (the same bytes published anew) is kept.

The retention exceeds every index file's ``max-age``: index files are served by path with
``Cache-Control: max-age=index_max_age``, so a client may act on a shard index up to that old (its
shards are kept days longer, by their own rows), and a request that looked up a pointer just before it
moved opens the old blob moments later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from condavault.channels.blobs import BlobGuard
from condavault.config import Settings
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.indexing.dirty import _insert
from condavault.indexing.models import PublishedFile, SupersededBlob
from condavault.maintenance.references import collect, referenced

log = logging.getLogger(__name__)
MARGIN_SECONDS = 5  # beyond max-age: a lookup's short cache and a request between lookup and open
BATCH = 2000


def retention_seconds(settings: Settings) -> float:
    """How long a superseded index blob stays: the setting, and never less than every index file's
    ``max-age`` plus a margin."""
    return float(max(settings.index_retention_seconds, settings.index_max_age + MARGIN_SECONDS))


def collect_every(settings: Settings) -> float:
    """The collection job's period: a quarter of the retention, between 1 s and 5 min."""
    return min(300.0, max(1.0, retention_seconds(settings) / 4))


def record(s: Session, shas: Iterable[str], at: datetime | None = None) -> None:
    """Note blobs that stopped being pointed at (in the caller's transaction). A blob noted again keeps
    its latest time."""
    when = at or utcnow()
    rows = [{"sha256": h, "superseded_at": when} for h in sorted({h for h in shas if h})]
    if not rows:
        return
    _upsert(s, SupersededBlob, rows, keys=["sha256"], update=["superseded_at"])


def _upsert(s: Session, model: type, rows: list[dict[str, object]], *, keys: list[str], update: list[str]) -> None:
    """Insert ``rows`` of ``model``; a row whose ``keys`` exist already takes its ``update`` columns from
    the new row. Multi-row statements of 500 rows, not one statement a row."""
    ins = _insert(s)(model)
    for i in range(0, len(rows), 500):
        stmt = ins.values(rows[i : i + 500])
        s.execute(stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update}))


def collect_superseded(db: Database, guard: BlobGuard, settings: Settings) -> tuple[int, int]:
    """Delete the superseded index blobs older than the retention that nothing points at again.
    Returns (deleted, still waiting). Notes of blobs gone or pointed at again are dropped; notes of
    blobs kept for now (recently relied on, pinned) stay for the next run."""
    retention = retention_seconds(settings)
    cutoff = utcnow() - timedelta(seconds=retention)
    deleted = waiting = 0
    last = ""
    while True:
        with db.session() as s:
            shas = list(
                s.scalars(
                    select(SupersededBlob.sha256)
                    .where(SupersededBlob.superseded_at < cutoff, SupersededBlob.sha256 > last)
                    .order_by(SupersededBlob.sha256)
                    .limit(BATCH)
                )
            )
        if not shas:
            break
        last = shas[-1]
        n, _young = collect(db, guard, shas, retention)
        deleted += n
        present = [h for h in shas if guard.blobs.exists(h)]
        keep = set(present) - referenced(db, present)  # still garbage: try again next run
        waiting += len(keep)
        done = [h for h in shas if h not in keep]

        def forget(s: Session, done: list[str] = done) -> None:
            for i in range(0, len(done), 500):  # a note renewed meanwhile (superseded again) stays
                s.execute(
                    delete(SupersededBlob).where(
                        SupersededBlob.sha256.in_(done[i : i + 500]), SupersededBlob.superseded_at < cutoff
                    )
                )

        db.run_write(forget)
    if deleted:
        log.info("collected superseded index blobs", extra={"deleted": deleted, "waiting": waiting})
    return deleted, waiting


def point_paths(
    s: Session,
    channel_id: int,
    files: list[tuple[str, str, str, int, str]] | list[tuple[str, str, str, int, str, str | None]],
    *,
    revision: int | None,
) -> None:
    """Point each ``(subdir, path)`` at its blob ``(sha256, size, content type[, source])``; ``source``: the
    ``.zst`` blob a plain JSON file is served decompressed from (``sha256`` is then its ETag,
    :func:`condavault.indexing.buckets.plain_id` of the source: no blob's name). Paths whose ``sha256``
    did not change keep their ETag and Last-Modified. ``revision`` None leaves a path's revision as it was."""
    now = utcnow()
    current = {
        (sd, p): sha
        for sd, p, sha in s.execute(
            select(PublishedFile.subdir, PublishedFile.path, PublishedFile.sha256).where(
                PublishedFile.channel_id == channel_id, PublishedFile.subdir.in_({f[0] for f in files})
            )
        )
    }
    superseded = []
    rows: dict[tuple[str, str], dict[str, object]] = {}  # one row per path: the last one given wins
    for sd, path, digest, size, ctype, *more in files:
        old = current.get((sd, path))
        if old == digest:
            continue
        if old is not None:
            superseded.append(old)
        rows[(sd, path)] = {
            "channel_id": channel_id,
            "subdir": sd,
            "path": path,
            "revision": 0 if revision is None else revision,
            "sha256": digest,
            "size": size,
            "content_type": ctype,
            "source_sha256": more[0] if more else None,
            "updated_at": now,
        }
    changed = ["sha256", "size", "content_type", "source_sha256", "updated_at"]
    changed += [] if revision is None else ["revision"]
    _upsert(s, PublishedFile, list(rows.values()), keys=["channel_id", "subdir", "path"], update=changed)
    record(s, superseded)  # collected after the retention unless pointed at again
