"""Uploads: one file per request, or a batch of any number of files over any number of requests.

One file (``POST /api/channels/{c}/files``): ingested, then (``wait``) the answer comes once the index
lists it and its follow-up work (CVE matching) is done.

A batch, for bulk uploads (``condavault upload`` of many files): ``open_batch`` makes an upload batch;
requests then add files to it, several files per request and several requests at once; each request's
files are stored as one ingest batch (one blob durability barrier, one transaction). While the batch is
open the channel's index is held (no index run per request, as for a mirror run); ``commit_batch``
publishes it once and waits for it. A batch nobody commits expires ``BATCH_TTL`` seconds after its last
request, and the periodic index sweep then publishes what it stored. Everything stored is committed as it
arrives: a client that dies mid-batch loses nothing it was told was stored.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from condavault.channels.events import RecordsChanged
from condavault.channels.ingest import IngestItem, IngestResult
from condavault.channels.models import Channel, Record, UploadBatch
from condavault.channels.services import _seqs, get_channel
from condavault.db.base import affected, utcnow
from condavault.db.session import Database
from condavault.errors import CondavaultError, Conflict, NotFound
from condavault.packages.filename import check_subdir
from condavault.packages.spool import Received

if TYPE_CHECKING:
    from condavault.auth.identity import Identity
    from condavault.context import Context

log = logging.getLogger(__name__)
BATCH_TTL = 600.0
MAX_FILES_PER_REQUEST = 1000
MAX_OPEN_BATCHES = 100  # per user: open batches hold their channel's index
BATCH_RETENTION_DAYS = 7
FOLLOW_UP_WAIT = 30.0
SIBLING_WINDOW = 2.0  # a batch that received files this recently is still being filled
SIBLING_WAIT = 3.0  # a commit waits at most this long for such batches of its channel to commit too
SIBLING_POLL = 0.05


def open_batch_channels(db: Database) -> set[int]:
    """Channels with an upload batch open now (the index sweep leaves them to the batch's commit)."""
    with db.session() as s:
        return set(
            s.scalars(
                select(UploadBatch.channel_id).where(UploadBatch.state == "open", UploadBatch.expires_at > time.time())
            )
        )


def batch_dict(b: UploadBatch, channel: str) -> dict[str, Any]:
    return {
        "id": b.id,
        "channel": channel,
        "state": b.state if b.state != "open" or b.expires_at > time.time() else "expired",
        "subdirs": sorted(filter(None, b.subdirs.split(" "))),
        "counts": json.loads(b.counts or "{}"),
        "expires_at": b.expires_at,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "committed_at": b.committed_at,
    }


def file_dict(filename: str, result: IngestResult | None, error: Exception | None) -> dict[str, Any]:
    if result is not None:
        return {**result.to_dict(), "error": None}
    err = (
        error.to_dict()["error"]
        if isinstance(error, CondavaultError)
        else {"code": "internal_error", "message": f"{type(error).__name__}", "details": {}}
    )
    return {"filename": filename, "status": "failed", "error": err}


class UploadService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- one file ---------------------------------------------------------------------------------------
    def existing(self, channel: str, filename: str) -> dict[str, Any] | None:
        """The stored file of that name, as an upload answer with status ``skipped`` (``skip_existing``)."""
        with self.ctx.db.session() as s:
            c = get_channel(s, channel)
            row = s.execute(
                select(Record.subdir, Record.sha256, Record.md5, Record.size).where(
                    Record.channel_id == c.id, Record.filename == filename
                )
            ).first()
        if row is None:
            return None
        return {
            "channel": channel,
            "subdir": row[0],
            "filename": filename,
            "sha256": row[1] or "",
            "md5": row[2] or "",
            "size": row[3] or 0,
            "status": "skipped",
            "indexed": True,
        }

    def upload_one(
        self,
        identity: Identity,
        channel: str,
        received: Received,
        filename: str,
        *,
        subdir: str | None,
        force: bool,
        skip_existing: bool,
        wait: bool,
        sha256: str | None,
    ) -> dict[str, Any]:
        if subdir is not None:
            check_subdir(subdir)
        if skip_existing and (found := self.existing(channel, filename)) is not None:
            received.discard()
            return found
        ingestor = self.ctx.ingestor.running_follow_up() if wait else self.ctx.ingestor
        result = ingestor.ingest(
            channel,
            received,
            filename,
            expected_subdir=subdir,
            force=force,
            actor=identity.username,
            expected_sha256=sha256,
        )
        indexed = True
        if wait and result.status != "unchanged":
            ref = self.ctx.channels.lookup(channel)
            assert ref is not None
            indexed = self.ctx.indexer.wait_for(ref.id, result.subdir, result.change_seq, timeout=120)
            self.follow_up(result.follow_up)
        return {**result.to_dict(), "indexed": indexed}

    def follow_up(self, job_ids: list[int]) -> None:
        """Run the durable after-commit work of a change here (or wait for the worker that took it), so a
        client told "done" sees its effects (e.g. the CVE links of an upload). Failures stay with the jobs."""
        for job_id in job_ids:
            try:
                if self.ctx.worker.run_here(job_id) is None:
                    self.ctx.jobs.wait(job_id, timeout=FOLLOW_UP_WAIT)
            except Exception:
                log.exception("follow-up job failed", extra={"job_id": job_id})

    # -- batches ----------------------------------------------------------------------------------------
    def open_batch(self, identity: Identity, channel: str) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            c = get_channel(s, channel)
            n = s.scalar(
                select(func.count())
                .select_from(UploadBatch)
                .where(
                    UploadBatch.created_by == identity.username,
                    UploadBatch.state == "open",
                    UploadBatch.expires_at > time.time(),
                )
            )
            if (n or 0) >= MAX_OPEN_BATCHES:
                raise Conflict(
                    f"{identity.label} has {n} upload batches open: commit some first",
                    code="too_many_open_batches",
                    limit=MAX_OPEN_BATCHES,
                )
            b = UploadBatch(
                id=secrets.token_hex(16),
                channel_id=c.id,
                created_by=identity.username,
                state="open",
                subdirs="",
                counts="{}",
                expires_at=time.time() + BATCH_TTL,
                created_at=utcnow(),
            )
            s.add(b)
            s.flush()
            return batch_dict(b, channel)

        return self.ctx.db.run_write(work)

    def _batch(
        self, s: Session, identity: Identity, channel: str, batch_id: str, *, lock: bool = False
    ) -> tuple[UploadBatch, Channel]:
        c = get_channel(s, channel)
        q = select(UploadBatch).where(UploadBatch.id == batch_id, UploadBatch.channel_id == c.id)
        b = s.scalar(q.with_for_update() if lock else q)
        if b is None or (b.created_by != identity.username and not identity.is_admin):
            raise NotFound(f"upload batch {batch_id!r} not found in channel {channel!r}", code="batch_not_found")
        return b, c

    def get_batch(self, identity: Identity, channel: str, batch_id: str) -> dict[str, Any]:
        with self.ctx.db.session() as s:
            b, _ = self._batch(s, identity, channel, batch_id)
            return batch_dict(b, channel)

    def add_files(
        self,
        identity: Identity,
        channel: str,
        batch_id: str,
        files: list[tuple[str, Received]],
        *,
        force: bool = False,
        skip_existing: bool = False,
    ) -> dict[str, Any]:
        """Store one request's files as one ingest batch; the index waits for the batch's commit."""
        try:
            with self.ctx.db.session() as s:
                b, _ = self._batch(s, identity, channel, batch_id)
                if b.state != "open":
                    raise Conflict(f"upload batch {batch_id!r} is {b.state}", code="batch_closed")
            out: list[dict[str, Any] | None] = [None] * len(files)
            items: list[tuple[int, IngestItem]] = []
            for i, (filename, received) in enumerate(files):
                if skip_existing and (found := self.existing(channel, filename)) is not None:
                    received.discard()
                    out[i] = {**found, "error": None}
                else:
                    items.append((i, IngestItem(received, filename, force=force)))
        except BaseException:
            for _, received in files:
                received.discard()
            raise
        ingestor = self.ctx.ingestor.without_index()
        done = ingestor.ingest_many(channel, [it for _, it in items], actor=identity.username)
        counts: Counter[str] = Counter()
        subdirs: set[str] = set()
        for (i, it), d in zip(items, done, strict=True):
            out[i] = file_dict(it.filename, d.result, d.error)
            if d.result is not None:
                counts[d.result.status] += 1
                subdirs.add(d.result.subdir)
            else:
                counts["failed"] += 1
        counts["skipped"] += sum(1 for o in out if o is not None and o.get("status") == "skipped")

        def note(s: Session) -> dict[str, Any]:
            b, _ = self._batch(s, identity, channel, batch_id, lock=True)
            total = Counter(json.loads(b.counts or "{}"))
            total.update(counts)
            b.counts = json.dumps({k: v for k, v in sorted(total.items()) if v})
            b.subdirs = " ".join(sorted(set(filter(None, b.subdirs.split(" "))) | subdirs))
            if b.state == "open":
                b.expires_at = time.time() + BATCH_TTL
            return batch_dict(b, channel)

        batch = self.ctx.db.run_write(note)
        return {"files": out, "batch": batch}

    def commit_batch(self, identity: Identity, channel: str, batch_id: str, *, wait: bool = True) -> dict[str, Any]:
        """Close the batch and publish the index once for everything it stored (waits for it with ``wait``).

        Parallel clients each commit a batch of their own into the same channel at about the same time:
        while another batch of the channel is still receiving files (a request in the last
        ``SIBLING_WINDOW`` seconds), the commit leaves the index to that batch's commit, waiting up to
        ``SIBLING_WAIT`` seconds for it, so one publish covers them all instead of one per commit."""

        def work(s: Session) -> tuple[dict[str, Any], dict[str, int], int, bool]:
            b, c = self._batch(s, identity, channel, batch_id, lock=True)
            if b.state != "open":
                raise Conflict(f"upload batch {batch_id!r} is {b.state}", code="batch_closed")
            b.state, b.committed_at = "committed", utcnow()
            touched = set(filter(None, b.subdirs.split(" ")))
            later = bool(touched) and wait and _siblings_active(s, c.id, b.id)
            if touched:
                self.ctx.events.record(s, RecordsChanged(c.id, tuple(sorted(touched)), index=not later))
            return batch_dict(b, channel), _seqs(s, c.id, touched), c.id, later

        batch, seqs, cid, later = self.ctx.db.run_write(work)
        if later:
            deadline = time.monotonic() + SIBLING_WAIT
            while time.monotonic() < deadline:
                with self.ctx.db.session() as s:
                    if not _siblings_active(s, cid, batch_id):
                        break
                time.sleep(SIBLING_POLL)
            for sd in seqs:  # nothing to do when a sibling's commit has published it meanwhile
                self.ctx.request_index(cid, sd)
        indexed = True
        if wait:
            for sd, seq in seqs.items():
                indexed = self.ctx.indexer.wait_for(cid, sd, seq, timeout=600) and indexed
        return {**batch, "indexed": indexed}


def _siblings_active(s: Session, channel_id: int, batch_id: str) -> bool:
    """Whether another open batch of the channel received files in the last ``SIBLING_WINDOW`` seconds."""
    since = time.time() + BATCH_TTL - SIBLING_WINDOW  # expires_at is the last request's time + BATCH_TTL
    q = select(UploadBatch.id).where(
        UploadBatch.channel_id == channel_id,
        UploadBatch.state == "open",
        UploadBatch.id != batch_id,
        UploadBatch.expires_at > since,
    )
    return s.scalar(q.limit(1)) is not None


def purge_batches(db: Database, older_than_days: float = BATCH_RETENTION_DAYS) -> int:
    """Forget batches committed or expired more than ``older_than_days`` ago (their files stay)."""
    cutoff = time.time() - older_than_days * 86400

    def work(s: Session) -> int:
        res = s.execute(
            delete(UploadBatch).where(
                UploadBatch.expires_at < cutoff,
                or_(UploadBatch.state == "committed", UploadBatch.expires_at < time.time()),
            )
        )
        return affected(res)

    return db.run_write(work)
