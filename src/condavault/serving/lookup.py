"""What a repo URL points at: published index pointers, shards and package blobs (cached briefly)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from condavault import metrics
from condavault.channels.models import Record
from condavault.db.session import Database
from condavault.indexing.models import PublishedFile, ShardBlob

log = logging.getLogger(__name__)
TTL = 1.0
# Index pointers change on every publish. The indexing process invalidates its own cache at once; the
# other ``serve --workers`` processes only notice when the entry expires, so keep it short (cheap now
# that concurrent misses share one query).
INDEX_TTL = 0.25
# Shards are content-addressed (the key names the bytes): an entry only goes stale when the shard expires
# after shard_retention_days, and then the blob is gone too (a 404 either way). Long, so that a subdir's
# primed shards outlive a quiet spell: re-reading them made the next solve wait (a 300 k-record subdir
# holds tens of thousands of shards).
SHARD_TTL = 900.0
# A hit on an index entry this close to its expiry reloads it in the background: under steady traffic
# the entry is renewed before it expires, and no request waits for (or pays the normal path for) a miss.
# An entry is still never served longer than INDEX_TTL after it was read.
REFRESH_AHEAD = 0.05
# A client that reads shards reads many of one subdir at once (a solve: one per name in its closure). The
# first miss loads the subdir's current shards in one query, shared by the misses arriving meanwhile.
PRIMED_SUBDIRS = 64
# The lookups' queries run on threads of their own, started once (``warm``) and kept: anyio's worker
# threads exit after 10 s idle, and starting one blocks the event loop until it runs (a burst of misses
# after a quiet spell -- a cold solve -- started several).
LOOKUP_THREADS = 4


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
    # an index file served decompressed from this blob (its .zst file); size is the JSON's, sha256 its ETag
    source: str | None = None


class Lookup:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[tuple[object, ...], tuple[float, Target | None]] = {}
        self._lock = threading.Lock()
        self._gen = 0  # bumped by invalidate() and published(): a load that started before must not store
        self._shard_gen = 0  # bumped by invalidate() only: a publish leaves the primed shards valid
        self.publishes = _Publishes(self)  # what index publishes call (a broadcast topic of its own)
        # (event loop id, key) -> the one load in flight that concurrent misses of that key share
        self._inflight: dict[tuple[int, tuple[object, ...]], asyncio.Future[Target | None]] = {}
        # (channel id, subdir) -> (expiry, sha256 -> Target): the current shards of a subdir, loaded at once
        self._shards: dict[tuple[object, object], tuple[float, dict[str, Target]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[tuple[object, ...]] = set()  # index keys being reloaded ahead of expiry
        self._pool: ThreadPoolExecutor | None = None
        self._closed = threading.Event()
        self._starting: threading.Thread | None = None

    def invalidate(self, channel_id: int | None = None) -> None:
        """The channel itself changed (deleted, its privacy, a reindex): forget all of it, its shards too."""
        self._forget(channel_id, shards=True)

    def published(self, channel_id: int | None = None) -> None:
        """An index publish changed the channel's index pointers: forget them. Its primed shards stay, and
        so does a priming in flight: shards are content-addressed, so an entry never goes stale. A publish
        adds shards (a miss loads a new one alone) and supersedes others, which are served until they
        expire, as :meth:`load` does. Re-reading every shard of the subdir after each publish cost as much
        as the index run itself at 300 k records."""
        self._forget(channel_id, shards=False)

    def _forget(self, channel_id: int | None, shards: bool) -> None:
        def ours(cid: object) -> bool:
            return channel_id is None or cid == channel_id

        with self._lock:
            self._gen += 1
            for k in [k for k in self._cache if ours(k[1])]:
                del self._cache[k]
            for fk in [fk for fk in self._inflight if ours(fk[1][1]) and (shards or fk[1][0] != "shards")]:
                del self._inflight[fk]
            if shards:
                self._shard_gen += 1
                for sk in [sk for sk in self._shards if ours(sk[0])]:
                    del self._shards[sk]

    def cached(self, key: tuple[object, ...]) -> tuple[bool, Target | None]:
        """``(True, target or None)`` when ``key``'s answer is cached (no database: call it on the event
        loop, where a hit on an index entry about to expire also starts its reload)."""
        hit = self._cache.get(key)
        if hit is not None:
            left = hit[0] - time.monotonic()
            if left > 0:
                if left < REFRESH_AHEAD and key[0] == "index" and key not in self._refreshing:
                    self._refresh(key)
                return True, hit[1]
        if key[0] == "shard":
            subdir = self._shards.get((key[1], key[2]))
            if subdir is not None and subdir[0] > time.monotonic():
                target = subdir[1].get(key[3])  # type: ignore[call-overload]
                if target is not None:
                    return True, target
        return False, None

    def _refresh(self, key: tuple[object, ...]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refreshing.add(key)
        task = loop.create_task(self._shared(key, lambda: self.load(key)))
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._refreshing.discard(key)
            self._primed(t)

        task.add_done_callback(done)

    def shards_primed(self, channel_id: int, subdir: str) -> bool:
        hit = self._shards.get((channel_id, subdir))
        return hit is not None and hit[0] > time.monotonic()

    async def aprime_shards(self, channel_id: int, subdir: str) -> None:
        """Load the current shards of a subdir at once (one query, shared by concurrent callers)."""
        if not self.shards_primed(channel_id, subdir):
            await self._shared(("shards", channel_id, subdir), lambda: self._prime_shards(channel_id, subdir))

    def prime_soon(self, channel_id: int, subdir: str) -> None:
        """Start :meth:`aprime_shards` in the background (the shard index was just asked for: its shards
        come next). Call it on the event loop."""
        if self.shards_primed(channel_id, subdir):
            return
        loop = asyncio.get_running_loop()
        if (id(loop), ("shards", channel_id, subdir)) in self._inflight:
            return
        task = loop.create_task(self.aprime_shards(channel_id, subdir))
        self._tasks.add(task)
        task.add_done_callback(self._primed)

    def _primed(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the requests load it again
            log.warning("a background lookup failed", extra={"error": repr(task.exception())[:300]})

    def _prime_shards(self, channel_id: int, subdir: str) -> None:
        gen = self._shard_gen
        with self.db.session() as s:
            rows = s.execute(
                select(ShardBlob.sha256, ShardBlob.size, ShardBlob.created_at).where(
                    ShardBlob.channel_id == channel_id,
                    ShardBlob.subdir == subdir,
                    ShardBlob.superseded_at.is_(None),
                )
            ).all()
        targets = {
            sha: Target(sha, size, "application/octet-stream", created.timestamp(), "shard")
            for sha, size, created in rows
        }
        with self._lock:
            if gen != self._shard_gen:
                return  # the channel changed while loading
            if len(self._shards) >= PRIMED_SUBDIRS:
                self._shards.clear()
            self._shards[(channel_id, subdir)] = (time.monotonic() + SHARD_TTL, targets)
        if channel_id != -1:  # not warm()'s query
            metrics.SHARD_LOADS.inc()

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="condavault-lookup")
        return self._pool

    def close(self) -> None:
        self._closed.set()
        if self._starting is not None:
            self._starting.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Start the lookup threads and run each lookup query once, for a channel that cannot exist
        (id -1), so that a restarted server's first conda client does not pay the threads' start, the
        statement compilation and the connection set-up (a cold solve's first requests wait on them).
        Stores nothing a request can see."""
        pool = self._threads()
        started = threading.Barrier(LOOKUP_THREADS)
        for f in [pool.submit(started.wait, 10) for _ in range(LOOKUP_THREADS)]:
            f.exception()  # a broken barrier only means fewer threads started now
        for kind in ("index", "shard", "package", "sidecar"):
            self.load((kind, -1, "", ""))
        self._prime_shards(-1, "")
        with self._lock:
            for k in [k for k in self._cache if k[1] == -1]:
                del self._cache[k]
            self._shards.pop((-1, ""), None)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def prime_published_soon(self, after: Callable[[], None] | None = None) -> None:
        """:meth:`prime_published` on a thread of its own (a process start: it must not delay the first
        requests, which prime what they need themselves meanwhile), then ``after`` on that thread."""
        self._starting = threading.Thread(
            target=self._prime_published, args=(after,), name="condavault-prime", daemon=True
        )
        self._starting.start()

    def _prime_published(self, after: Callable[[], None] | None) -> None:
        try:
            n = self.prime_published()
            if after is not None:
                after()
        except Exception:  # only a head start
            if not self._closed.is_set():
                log.warning("priming the published shards failed", exc_info=True)
            return
        log.info("primed the shard lookups of the recently published subdirs", extra={"subdirs": n})

    def primed_shards(self) -> list[Target]:
        """The shards of the primed subdirs, subdir by subdir in the order they were primed (at a process
        start: the most recently published first)."""
        with self._lock:
            maps = [targets for _expiry, targets in self._shards.values()]
        return [t for targets in maps for t in targets.values()]

    def prime_published(self) -> int:
        """Load the current shards of the subdirs published most recently (at most ``PRIMED_SUBDIRS``),
        as a first shard request of each would: a restarted process's first solves find every shard in
        memory rather than waiting for a subdir's query (+5-15 ms on a cold solve at 10 k records)."""
        with self.db.session() as s:
            rows = s.execute(
                select(ShardBlob.channel_id, ShardBlob.subdir)
                .where(ShardBlob.superseded_at.is_(None))
                .group_by(ShardBlob.channel_id, ShardBlob.subdir)
                .order_by(func.max(ShardBlob.created_at).desc())
                .limit(PRIMED_SUBDIRS)
            ).all()
        done = 0
        for channel_id, subdir in rows:
            if self._closed.is_set():
                break
            if not self.shards_primed(channel_id, subdir):
                self._prime_shards(channel_id, subdir)
                done += 1
        return done

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
        (a hot index file whose entry expires under load costs one query, not one per request). A
        shard's miss loads every current shard of its subdir first (the next ones are hits)."""
        if key[0] == "shard" and not self.shards_primed(key[1], key[2]):  # type: ignore[arg-type]
            await self.aprime_shards(key[1], key[2])  # type: ignore[arg-type]
            hit, target = self.cached(key)
            if hit:
                return target
        return await self._shared(key, lambda: self.load(key))

    async def _shared(self, key: tuple[object, ...], fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        fkey = (id(loop), key)
        fut = self._inflight.get(fkey)
        if fut is None:
            fut = loop.run_in_executor(self._threads(), fn)
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
                        PublishedFile.sha256,
                        PublishedFile.size,
                        PublishedFile.content_type,
                        PublishedFile.updated_at,
                        PublishedFile.source_sha256,
                    ).where(
                        PublishedFile.channel_id == channel_id,
                        PublishedFile.subdir == subdir,
                        PublishedFile.path == name,
                    )
                ).first()
                target = Target(row[0], row[1], row[2], row[3].timestamp(), "index", source=row[4]) if row else None
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


class _Publishes:
    """``Lookup.published`` under the name a broadcast calls (``invalidate``): index publishes are a topic
    of their own, so the other processes also keep their primed shards (``wiring.broadcast``)."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup

    def invalidate(self, channel_id: int | None = None) -> None:
        self._lookup.published(channel_id)
