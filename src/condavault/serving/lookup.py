"""What a repo URL points at: published index pointers, shards and package blobs (cached briefly)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import anyio
from sqlalchemy import select

from condavault.channels.models import Record
from condavault.db.session import Database
from condavault.indexing.models import PublishedFile, ShardBlob

TTL = 1.0
# Index pointers change on every publish. The indexing process invalidates its own cache at once; the
# other ``serve --workers`` processes only notice when the entry expires, so keep it short (cheap now
# that concurrent misses share one query).
INDEX_TTL = 0.25
# Shards are content-addressed (the key names the bytes): an entry only goes stale when the shard expires
# after shard_retention_days, and then the blob is gone too (a 404 either way).
SHARD_TTL = 60.0


@dataclass(frozen=True)
class Target:
    sha256: str
    size: int
    content_type: str
    last_modified: float  # unix seconds
    kind: str  # index | shard | package | sidecar
    has_blob: bool = True
    record_id: int | None = None
    source_url: str | None = None
    filename: str | None = None


class Lookup:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[tuple[object, ...], tuple[float, Target | None]] = {}
        self._lock = threading.Lock()
        self._gen = 0  # bumped by invalidate(): a load that started before it must not store its answer
        # (event loop id, key) -> the one load in flight that concurrent misses of that key share
        self._inflight: dict[tuple[int, tuple[object, ...]], asyncio.Future[Target | None]] = {}

    def invalidate(self, channel_id: int | None = None) -> None:
        with self._lock:
            self._gen += 1
            if channel_id is None:
                self._cache.clear()
                self._inflight.clear()
            else:
                for k in [k for k in self._cache if k[1] == channel_id]:
                    del self._cache[k]
                for fk in [fk for fk in list(self._inflight) if fk[1][1] == channel_id]:
                    self._inflight.pop(fk, None)

    def cached(self, key: tuple[object, ...]) -> tuple[bool, Target | None]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def store(self, key: tuple[object, ...], value: Target | None, gen: int | None = None) -> None:
        with self._lock:
            if gen is not None and gen != self._gen:
                return  # invalidated while loading: the next request reads again
            if len(self._cache) > 50000:
                self._cache.clear()
            ttl = INDEX_TTL if key[0] == "index" else SHARD_TTL if key[0] == "shard" and value is not None else TTL
            self._cache[key] = (time.monotonic() + ttl, value)

    async def aload(self, key: tuple[object, ...]) -> Target | None:
        """``load`` on a worker thread, shared by every request that misses the same key meanwhile
        (a hot index file whose entry expires under load costs one query, not one per request)."""
        loop = asyncio.get_running_loop()
        fkey = (id(loop), key)
        fut = self._inflight.get(fkey)
        if fut is None:
            fut = asyncio.ensure_future(anyio.to_thread.run_sync(self.load, key))
            self._inflight[fkey] = fut

            def done(f: asyncio.Future[Target | None]) -> None:
                if self._inflight.get(fkey) is f:
                    del self._inflight[fkey]
                if not f.cancelled():
                    f.exception()  # retrieved by the waiters; don't log "never retrieved"

            fut.add_done_callback(done)
        return await asyncio.shield(fut)

    def load(self, key: tuple[object, ...]) -> Target | None:
        kind, channel_id, subdir, name = key
        gen = self._gen
        with self.db.session() as s:
            if kind == "index":
                row = s.execute(
                    select(
                        PublishedFile.sha256, PublishedFile.size, PublishedFile.content_type, PublishedFile.updated_at
                    ).where(
                        PublishedFile.channel_id == channel_id,
                        PublishedFile.subdir == subdir,
                        PublishedFile.path == name,
                    )
                ).first()
                target = Target(row[0], row[1], row[2], row[3].timestamp(), "index") if row else None
            elif kind == "shard":
                srow = s.execute(
                    select(ShardBlob.size, ShardBlob.created_at).where(
                        ShardBlob.channel_id == channel_id,
                        ShardBlob.subdir == subdir,
                        ShardBlob.sha256 == name,
                    )
                ).first()
                target = (
                    Target(str(name), srow[0], "application/octet-stream", srow[1].timestamp(), "shard")
                    if srow
                    else None
                )
            elif kind == "sidecar":  # a record's CEP 50 attestation sidecar (condavault.signing)
                from condavault.signing.models import RecordTrust

                crow = s.execute(
                    select(RecordTrust.sidecar_sha256, RecordTrust.sidecar_size, RecordTrust.checked_at)
                    .join(Record, Record.id == RecordTrust.record_id)
                    .where(
                        Record.channel_id == channel_id,
                        Record.subdir == subdir,
                        Record.filename == name,
                        RecordTrust.sidecar_sha256.is_not(None),
                    )
                ).first()
                target = (
                    Target(
                        crow[0] or "",
                        crow[1] or 0,
                        "application/json",
                        crow[2].timestamp(),
                        "sidecar",
                        filename=str(name),
                    )
                    if crow
                    else None
                )
            else:
                prow = s.execute(
                    select(
                        Record.sha256, Record.size, Record.created_at, Record.has_blob, Record.id, Record.source_url
                    ).where(
                        Record.channel_id == channel_id,
                        Record.subdir == subdir,
                        Record.filename == name,
                    )
                ).first()
                target = (
                    Target(
                        prow[0] or "",
                        prow[1] or 0,
                        "application/octet-stream",
                        prow[2].timestamp(),
                        "package",
                        has_blob=prow[3],
                        record_id=prow[4],
                        source_url=prow[5],
                        filename=str(name),
                    )
                    if prow
                    else None
                )
        self.store(key, target, gen)
        return target
