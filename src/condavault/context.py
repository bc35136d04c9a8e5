"""Everything a running condavault needs, built once from Settings and shared by the web layer,
the CLI's local commands and the job workers.

``Context.build`` makes the core services (database, blob store, indexer, ingest, auth, the job queue
and the event bus) and then wires every domain (``condavault.wiring``: typed, in one place). ``start``
starts a process's background work: the audit writer always, the job worker and the schedules when the
process runs jobs (``settings.worker``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from condavault import metrics
from condavault.auth.identity import Identity
from condavault.auth.policy import ChannelRef
from condavault.auth.services import AuthService
from condavault.channels.access import ChannelDirectory
from condavault.channels.ingest import Ingestor
from condavault.config import Settings, unknown_environment
from condavault.db.notify import CacheBroadcast
from condavault.db.session import Database
from condavault.errors import NotFound
from condavault.events import Actor, AdminChange, EventBus
from condavault.indexing.indexer import Indexer
from condavault.jobs.holders import new_holder, set_node_name
from condavault.jobs.queue import JobQueue
from condavault.jobs.registry import JobKinds
from condavault.jobs.runner import JobRunner
from condavault.jobs.schedule import Schedules
from condavault.jobs.worker import JobWorker
from condavault.memory import limit_malloc_arenas, trim
from condavault.serving.lookup import Lookup, Target
from condavault.storage import BlobStore, open_blob_store

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from condavault.wiring import Domains

log = logging.getLogger(__name__)
EXTRAS_DELAY = 1.0
EXTRAS_SHARE = 0.2  # the slow lane may use at most about this share of the time
INDEX_RETRY_MAX = 300.0  # seconds at most between the sweep's retries of an index run that keeps failing

DownloadListener = Callable[[Request, Identity, ChannelRef, str, Target], None]
MissingFetcher = Callable[[ChannelRef, str, Target], Awaitable[Target | None]]


@dataclass
class Context:
    settings: Settings
    db: Database
    blobs: BlobStore
    indexer: Indexer
    ingestor: Ingestor
    runner: JobRunner
    auth: AuthService
    channels: ChannelDirectory
    lookup: Lookup
    events: EventBus
    kinds: JobKinds
    jobs: JobQueue
    schedules: Schedules
    worker: JobWorker
    started: float = field(default_factory=time.time)
    _extras_due: dict[int, float] = field(default_factory=dict)
    _extras_lock: threading.Lock = field(default_factory=threading.Lock)
    _extras_cost: dict[int, float] = field(default_factory=dict)  # seconds the last slow-lane run took
    _held: Counter[int] = field(default_factory=Counter)  # channel id -> runs holding its index (hold_index)
    # (channel id, subdir) -> (failed runs in a row, monotonic time before which the sweep leaves it alone)
    _index_failures: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, *, start_jobs: bool = True) -> Context:
        """The core services and every domain, wired. ``start_jobs`` (with ``settings.worker``) starts the
        in-process index sweep; :meth:`start` starts the rest of the background work."""
        for problem in unknown_environment():
            log.warning(problem)
        limit_malloc_arenas()  # before the job and web threads start (see condavault.memory)
        set_node_name(settings.node_name)  # before any lease holder id is made
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = Database(settings.db_url)
        blobs = open_blob_store(settings)
        indexer = Indexer(settings, db, blobs)
        runner = JobRunner(settings.job_threads)
        events = EventBus(db)
        kinds = JobKinds()
        jobs = JobQueue(db, kinds, new_holder(), lease_seconds=settings.job_lease_seconds)
        events.queue = jobs
        schedules = Schedules(db, jobs)
        ctx = cls(
            settings=settings,
            db=db,
            blobs=blobs,
            indexer=indexer,
            ingestor=Ingestor(settings, db, blobs, events),
            runner=runner,
            auth=AuthService(db),
            channels=ChannelDirectory(db),
            lookup=Lookup(db),
            events=events,
            kinds=kinds,
            jobs=jobs,
            schedules=schedules,
            worker=None,  # type: ignore[arg-type]  # needs the Context itself: set below
        )
        ctx.worker = JobWorker(ctx, jobs, kinds, schedules, threads=settings.job_threads)
        indexer.listeners.append(lambda cid, _sd, _names: ctx.lookup.publishes.invalidate(cid))
        indexer.after_publish.append(lambda cid, _sd: ctx.request_extras(cid))
        from condavault import wiring

        ctx.domains = wiring.wire(ctx)
        ctx.broadcast = wiring.broadcast(ctx)
        if start_jobs and settings.worker:
            runner.every(1.0, ctx.sweep, "index-sweep")
            runner.every(600.0, ctx.sweep_temp_files, "temp-sweep")
        return ctx

    domains: Domains = field(init=False)
    broadcast: CacheBroadcast = field(init=False)  # cache invalidation across processes (condavault.db.notify)

    def start(self) -> None:
        """Background work of a serving or worker process (idempotent)."""
        from condavault import wiring

        wiring.start(self)

    # -- hooks other domains fill in -----------------------------------------------------------------
    download_listeners: list[DownloadListener] = field(default_factory=list)
    missing_fetchers: list[MissingFetcher] = field(default_factory=list)
    # channels whose index the sweep leaves alone because a run elsewhere (another process) is writing them
    # and publishes them itself, e.g. the mirror domain's running mirrors
    index_holds: list[Callable[[], Collection[int]]] = field(default_factory=list)

    def record_change(
        self,
        identity: object,
        action: str,
        target: str,
        before: object = None,
        after: object = None,
        *,
        session: Session | None = None,
    ) -> None:
        """An administrative change happened: an :class:`AdminChange` event (the audit domain writes it in
        the same transaction as ``session``, else in one of its own)."""
        event = AdminChange(Actor.of(identity), action, target, before, after)
        if session is not None:
            self.events.record(session, event)
        else:
            self.events.emit(event)

    def on_download(
        self, request: Request, identity: Identity, channel: ChannelRef, subdir: str, target: Target
    ) -> None:
        metrics.DOWNLOADS.inc()
        metrics.DOWNLOAD_BYTES.inc(target.size)
        for fn in self.download_listeners:
            fn(request, identity, channel, subdir, target)

    async def fetch_missing(self, channel: ChannelRef, subdir: str, target: Target) -> Target:
        """Bytes of a metadata-only record: a passive mirror fetches them on first request."""
        for fn in self.missing_fetchers:
            got = await fn(channel, subdir, target)
            if got is not None:
                return got
        raise NotFound(
            f"{subdir}/{target.filename} is indexed but its bytes are not available on this server",
            code="file_not_available",
        )

    # -- indexing --------------------------------------------------------------------------------
    def request_index(self, channel_id: int, subdir: str) -> None:
        self.runner.submit_coalesced(("index", channel_id, subdir), lambda: self._index(channel_id, subdir))

    def _index(self, channel_id: int, subdir: str) -> None:
        """An index run; one that fails is retried by the sweep after a growing pause (2 s, 4 s, ... at
        most INDEX_RETRY_MAX), not every second: a run that cannot succeed (a full disk, a record the
        encoders refuse) is then not a busy loop of failures. An explicit request still runs at once."""
        key = (channel_id, subdir)
        try:
            self.indexer.index_subdir(channel_id, subdir)
        except Exception:
            with self._extras_lock:
                failed = self._index_failures.get(key, (0, 0.0))[0] + 1
                pause = min(INDEX_RETRY_MAX, 2.0**failed)
                self._index_failures[key] = (failed, time.monotonic() + pause)
            raise
        if key in self._index_failures:
            with self._extras_lock:
                self._index_failures.pop(key, None)

    def request_extras(self, channel_id: int) -> None:
        """Schedule the slow lane. Its delay grows with its last cost (EXTRAS_SHARE), so on a large
        channel a burst of uploads is not slowed by rebuilding current_repodata after each one."""
        delay = max(EXTRAS_DELAY, self._extras_cost.get(channel_id, 0.0) / EXTRAS_SHARE)
        with self._extras_lock:
            self._extras_due.setdefault(channel_id, time.monotonic() + delay)

    @contextmanager
    def hold_index(self, channel_id: int) -> Iterator[None]:
        """While this lasts the sweep starts no index run for the channel: a bulk writer (a mirror run)
        publishes it itself, once at its end, instead of the sweep publishing every second meanwhile.
        Explicit requests (``request_index``, an upload's) still index it."""
        with self._extras_lock:
            self._held[channel_id] += 1
        try:
            yield
        finally:
            with self._extras_lock:
                self._held[channel_id] -= 1
                if self._held[channel_id] <= 0:
                    del self._held[channel_id]

    def held_channels(self) -> set[int]:
        with self._extras_lock:
            held = set(self._held)
        for fn in self.index_holds:
            try:
                held.update(fn())
            except Exception:  # pragma: no cover - a hook's failure must not stop indexing
                log.exception("index hold hook failed")
        return held

    def sweep(self) -> None:
        """Safety net and slow lane: index anything left dirty (e.g. by another process) unless a bulk
        writer holds its channel, then run due extras."""
        pending = self.indexer.pending_subdirs()
        held = self.held_channels() if pending else set()
        now = time.monotonic()
        for channel_id, subdir in pending:
            failure = self._index_failures.get((channel_id, subdir))
            if channel_id not in held and (failure is None or failure[1] <= now):
                self.request_index(channel_id, subdir)
        with self._extras_lock:
            due = [cid for cid, t in self._extras_due.items() if t <= now and cid not in self._held]
            for cid in due:
                del self._extras_due[cid]
        for cid in due:
            self.runner.submit_coalesced(("extras", cid), lambda cid=cid: self._extras(cid))

    def _extras(self, channel_id: int) -> None:
        started = time.monotonic()
        try:
            self.indexer.publish_extras(channel_id)
        except Exception:
            log.exception("extras failed", extra={"channel_id": channel_id})
        finally:
            trim()  # the slow lane reads every record of the channel: give that memory back
        self._extras_cost[channel_id] = time.monotonic() - started

    def sweep_temp_files(self) -> int:
        """Remove temp files that killed or failed writes left behind (older than ``temp_grace_seconds``)."""
        from condavault.maintenance.references import sweep_temp_files, temp_folders

        removed = sweep_temp_files(self.blobs, self.settings.temp_grace_seconds, temp_folders(self.settings.data_dir))
        if removed:
            log.info("removed leftover temp files", extra={"files": removed})
        return removed

    def index_now(self, channel_id: int, subdirs: list[str] | None = None) -> None:
        """Synchronously index (CLI ``reindex``, tests)."""
        from condavault.indexing.dirty import subdirs_of

        with self.db.session() as s:
            all_subdirs = subdirs_of(s, channel_id)
        for sd in subdirs or all_subdirs:
            self.indexer.index_subdir(channel_id, sd)
        self.indexer.publish_extras(channel_id)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every dirty subdir is indexed and no slow-lane work is due (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self.indexer.pending_subdirs()
            with self._extras_lock:
                due = list(self._extras_due)
            if not pending and not due and not self.runner.busy():
                return
            for cid, sd in pending:
                self.indexer.index_subdir(cid, sd)
            for cid in due:
                with self._extras_lock:
                    self._extras_due.pop(cid, None)
                self._extras(cid)
            time.sleep(0.05)
        raise TimeoutError("condavault did not settle")

    def close(self) -> None:
        from condavault import wiring

        wiring.stop(self)
        self.runner.shutdown(wait=True)
        self.lookup.close()
        self.db.dispose()
