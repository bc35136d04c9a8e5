"""Active mode's downloads: fetch the files the channel lacks and ingest them in batches.

* **download** -- up to ``settings.mirror_concurrency`` files at a time, each lane on a connection of
  its own, each transfer retried in :mod:`.upstream`. The lanes start at ``RAMP_START`` and one more
  opens per answer, so a server is not hit by a burst of connections. A small file is received into
  memory, a larger one spooled to disk as it arrives.
* **check** -- as soon as a file is in, ``Ingestor.check`` compares its size and sha256 (or md5) with
  upstream's repodata and walks the archive: on the event loop for a small file (a fraction of a
  millisecond, between network events, so no second thread fights for the GIL), on a thread for a
  large one.
* **store** -- one lane takes the checked files -- up to ``BATCH_FILES`` files or ``BATCH_BYTES`` bytes,
  or what came within ``BATCH_LINGER`` seconds -- and stores them with ``Ingestor.store``, on a thread:
  the blobs written (a few at a time) and made durable with one barrier, the rows written in one
  transaction, the subdir marked dirty once. Downloads go on meanwhile; they wait when ``QUEUE_FILES``
  files or ``QUEUE_BYTES`` bytes are waiting to be stored. (Writing each blob ahead as soon as it is
  checked, on threads of its own, measured slower: on two cores they only compete with the downloads.)

A file that fails (download, checksum, archive, row) is recorded as a failure of the run with its code;
the rest of its batch still lands. For long runs the index is published every ``PUBLISH_EVERY`` seconds
so clients see progress; otherwise once, at the end of the run (:meth:`.applying.Applier.publish`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from condavault.auth.identity import Identity
from condavault.channels.ingest import Ingested, IngestItem, Received
from condavault.errors import CondavaultError
from condavault.mirror.bookkeeping import RunBook, RunInfo
from condavault.mirror.plan import Plan
from condavault.mirror.planning import Work, overrides_of
from condavault.mirror.upstream import Upstream

__all__ = ["Fetcher", "failure_of"]

log = logging.getLogger(__name__)

MEMORY_SPOOL = 1024 * 1024  # a file up to this size is received into memory and checked on the event loop
RAMP_START = 4  # download lanes at first; each answer opens one more, up to settings.mirror_concurrency
BATCH_FILES = 100
BATCH_BYTES = 64 * 1024 * 1024
BATCH_LINGER = 0.1  # seconds a batch waits for more files while downloads go on
QUEUE_FILES = 4 * BATCH_FILES
QUEUE_BYTES = 256 * 1024 * 1024  # in memory (small files) or spooled to disk, waiting to be stored
PUBLISH_EVERY = 30.0  # seconds between progress publishes of the index during a long run


def failure_of(exc: BaseException) -> tuple[str, str]:
    """The (code, message) a failed file is reported with."""
    if isinstance(exc, CondavaultError):
        return exc.code, exc.message
    if isinstance(exc, (httpx.HTTPError, OSError)):
        return "download_failed", f"{type(exc).__name__}: {exc}"
    log.error("mirror file failed unexpectedly", exc_info=exc)
    return "internal_error", f"{type(exc).__name__}: {exc}"


async def _replay(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


class Fetcher:
    """Downloads ``work.fetch`` and ingests it; use once: ``await Fetcher(...).run()``."""

    def __init__(self, info: RunInfo, book: RunBook, up: Upstream, plan: Plan, work: Work) -> None:
        self.info = info
        self.book = book
        self.up = up
        self.plan = plan
        self.work = work
        self.identity = Identity(username=f"mirror:{info.mirror_name}")
        # the same ingest path, minus the per-batch index request: the run publishes at its end
        self.ingestor = info.ctx.ingestor.without_index()
        self._queue: list[tuple[tuple[str, str], Ingested]] = []  # checked, waiting to be stored
        self._queued_bytes = 0
        self._downloading = 0
        self._workers: list[asyncio.Task[None]] = []
        self._concurrency = 1
        self._keys: Iterator[tuple[str, str]] = iter(())
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._check_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="condavault-mirror-check")
        self._last_publish = time.monotonic()

    async def run(self) -> None:
        self._concurrency = max(1, self.info.ctx.settings.mirror_concurrency)
        self._keys = iter(self.work.fetch)
        for _ in range(min(self._concurrency, RAMP_START)):
            self._spawn()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="condavault-mirror-store")
        try:
            await self._store_lane(pool)
        finally:
            for w in self._workers:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            pool.shutdown(wait=True)
            self._check_pool.shutdown(wait=True)
            for _, b in self._queue:  # left by an error of the lane itself
                self.ingestor.discard(b)

    # -- downloads and checks (event loop) -----------------------------------------------------------
    def _has_room(self) -> bool:
        return not self._queue or (len(self._queue) < QUEUE_FILES and self._queued_bytes < QUEUE_BYTES)

    def _spawn(self) -> None:
        self._downloading += 1
        lane = len(self._workers)
        self._workers.append(asyncio.create_task(self._download(self._keys, lane)))

    async def _download(self, keys: Iterator[tuple[str, str]], lane: int) -> None:
        try:
            for key in keys:  # one iterator shared by every download task: each takes the next file
                while not self._has_room() and not self.book.cancelled:
                    self._room.clear()
                    await self._room.wait()
                if self.book.cancelled:
                    return
                try:
                    received = await self.up.download(key[0], key[1], self._receive, lane=lane)
                    checked = await self._check(key, received)
                except Exception as exc:
                    self.book.fail(key, *failure_of(exc))
                    continue
                if not checked.ok:
                    checked.item.received.discard()
                    assert checked.error is not None
                    self.book.fail(key, *failure_of(checked.error))
                    continue
                self._queue.append((key, checked))
                self._queued_bytes += received.size
                self._arrived.set()
                if len(self._workers) < self._concurrency:  # ramp up: one more connection per answer
                    self._spawn()
        finally:
            self._downloading -= 1
            self._arrived.set()

    async def _receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """A small file is kept in memory (no file I/O on the event loop); a larger one is spooled to
        disk as it arrives."""
        head: list[bytes] = []
        size = 0
        async for chunk in chunks:
            head.append(chunk)
            size += len(chunk)
            if size > MEMORY_SPOOL:
                return await self.ingestor.aspool(_replay(head, chunks))
        return Received.of_bytes(b"".join(head))

    async def _check(self, key: tuple[str, str], received: Received) -> Ingested:
        sd, fn = key
        rec = self.plan.records[key].record
        sha = rec.get("sha256") or None
        item = IngestItem(
            received,
            fn,
            expected_subdir=sd,
            expected_sha256=sha,
            expected_md5=None if sha else rec.get("md5") or None,
            expected_size=rec.get("size"),
            force=key in self.work.replace or sha is None,
            record_overrides=overrides_of(rec),
            source_url=self.up.display_url(sd, fn),
        )
        if received.data is not None:
            return self.ingestor.check(item)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._check_pool, self.ingestor.check, item)
        except BaseException:
            received.discard()
            raise

    # -- the store lane ------------------------------------------------------------------------------
    def _batch_full(self) -> bool:
        return len(self._queue) >= BATCH_FILES or self._queued_bytes >= BATCH_BYTES

    async def _store_lane(self, pool: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if not self._downloading:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = loop.time() + BATCH_LINGER
            while self._downloading and not self._batch_full() and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            self._room.set()
            await loop.run_in_executor(pool, self._store, batch)

    def _take(self) -> list[tuple[tuple[str, str], Ingested]]:
        n, size = 0, 0
        for _, b in self._queue:
            if n and (n >= BATCH_FILES or size + b.item.received.size > BATCH_BYTES):
                break
            n += 1
            size += b.item.received.size
        batch, self._queue = self._queue[:n], self._queue[n:]
        self._queued_bytes -= size
        return batch

    def _store(self, batch: list[tuple[tuple[str, str], Ingested]]) -> None:
        """One batch through ``Ingestor.store`` (on the lane's thread)."""
        try:
            self.ingestor.store(self.info.channel_name, [b for _, b in batch], actor=self.identity.username)
        except Exception as exc:  # the whole batch: e.g. the channel was deleted, the disk is full
            for key, _ in batch:
                self.book.fail(key, *failure_of(exc))
            self.book.flush_updates()
            return
        landed = False
        for key, b in batch:
            if b.result is None:
                assert b.error is not None
                self.book.fail(key, *failure_of(b.error))
            else:
                self.book.done(key, b.result.size)
                self.book.touched.add(key[0])
                landed = True
        self.book.flush_updates()  # the plan items say so right after their rows landed
        if landed and time.monotonic() - self._last_publish >= PUBLISH_EVERY:
            self._last_publish = time.monotonic()
            for sd in sorted(self.book.touched):
                self.info.ctx.request_index(self.info.channel_id, sd)  # progress for clients, in the background
