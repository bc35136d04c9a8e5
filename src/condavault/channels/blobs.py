"""Deleting blobs safely while other processes ingest the same bytes.

A blob is shared by every record with its sha256 (and index blobs live in the same store). "Is it
unused? then delete it" is a race: between the check and the delete, another ingest of the same bytes
may find the blob present, skip writing it and commit a record pointing at it. So:

* an ingest **pins** the sha256 of each file (a ``blob_pins`` row, committed) before it looks at or
  writes the blob, and its record transaction removes the pin;
* a delete runs in one write transaction that takes a lock on the sha256 (PostgreSQL: a transaction
  advisory lock, which pinning takes too; SQLite: the database write lock every write transaction
  holds), checks that no row of :data:`BLOB_COLUMNS` (records, index pointers, shards) and no live pin
  references it, and removes the file before it commits.

Pins of a holder that is gone (``kill -9``) are ignored once the holder is dead, or after a day.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from condavault.channels.models import BlobPin, Record
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.indexing.models import PublishedFile, ShardBlob, ShardHead
from condavault.jobs.holders import holder_is_dead
from condavault.storage.interfaces import BlobStore

log = logging.getLogger(__name__)
PIN_MAX_AGE = timedelta(days=1)
# every column holding the sha256 of a stored blob; a domain that adds one registers it here
BLOB_COLUMNS: list[Any] = [
    Record.sha256,
    PublishedFile.sha256,
    PublishedFile.source_sha256,  # the .zst blob a plain JSON index file is served from
    ShardHead.sha256,
    ShardBlob.sha256,
]


_LOCK_MANY = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(x, 0)) FROM (SELECT x FROM unnest(CAST(:shas AS text[])) AS t(x) "
    "ORDER BY x) AS ordered"
)


def _lock(s: Session, shas: Iterable[str]) -> None:
    """Serialise pins and deletes of these blobs (PostgreSQL; SQLite's write lock does it already). One
    statement for any number of blobs, taking the locks in sorted order (no deadlock between batches)."""
    if s.get_bind().dialect.name != "postgresql":
        return
    wanted = sorted(set(shas))
    if wanted:
        s.execute(_LOCK_MANY, {"shas": wanted})


class BlobGuard:
    def __init__(self, db: Database, blobs: BlobStore, holder: str) -> None:
        self.db = db
        self.blobs = blobs
        self.holder = holder

    def pin(self, shas: Iterable[str]) -> None:
        """Pin blobs before an ingest looks at or writes them (committed when this returns)."""
        wanted = sorted(set(shas))
        if not wanted:
            return
        rows = [{"sha256": sha, "holder": self.holder, "created_at": utcnow()} for sha in wanted]

        def work(s: Session) -> None:
            _lock(s, wanted)
            ins = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(BlobPin)
            s.execute(ins.on_conflict_do_nothing(index_elements=["sha256", "holder"]), rows)

        self.db.run_write(work)

    def unpin(self, s: Session, shas: Iterable[str]) -> None:
        """Remove our pins, in the caller's transaction (the one that writes the records). It takes the
        lock too: a delete that is checking these blobs finishes before the records become visible."""
        wanted = sorted(set(shas))
        _lock(s, wanted)
        for i in range(0, len(wanted), 500):
            s.execute(delete(BlobPin).where(BlobPin.holder == self.holder, BlobPin.sha256.in_(wanted[i : i + 500])))

    def unpin_now(self, shas: Iterable[str]) -> None:
        self.db.run_write(lambda s: self.unpin(s, shas))

    def delete_if_unreferenced(self, sha256: str, *, min_age: float = 0.0) -> bool:
        """Delete the blob unless something references it (checked and deleted under the lock). Our own
        pin of it goes too. ``min_age``: keep a blob written less than that many seconds ago (a sweep
        over the whole store must not take an index blob the indexer has written and not yet pointed
        at). Returns True when the blob was deleted."""
        if min_age > 0:
            age = self.blobs.age(sha256)
            if age is None or age < min_age:
                return False

        def work(s: Session) -> bool:
            _lock(s, [sha256])
            s.execute(delete(BlobPin).where(BlobPin.sha256 == sha256, BlobPin.holder == self.holder))
            for column in BLOB_COLUMNS:
                if s.scalar(select(column).where(column == sha256).limit(1)) is not None:
                    return False
            cutoff = utcnow() - PIN_MAX_AGE
            for holder, created in s.execute(
                select(BlobPin.holder, BlobPin.created_at).where(BlobPin.sha256 == sha256)
            ):
                if created >= cutoff and not holder_is_dead(holder):
                    return False  # another ingest is about to reference it
            s.execute(delete(BlobPin).where(BlobPin.sha256 == sha256))  # pins of the dead
            self.blobs.delete(sha256)  # before the commit releases the lock
            return True

        deleted = self.db.run_write(work)
        if deleted:
            log.info("deleted unreferenced blob", extra={"sha256": sha256})
        return deleted
