"""Everything a running condavault needs, built once from Settings and shared by the web layer,
the CLI's local commands and the job runner."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from condavault import metrics
from condavault.auth.policy import ChannelRef
from condavault.auth.services import AuthService
from condavault.channels.access import ChannelDirectory
from condavault.config import Settings
from condavault.db.session import Database
from condavault.errors import NotFound
from condavault.indexing.indexer import Indexer
from condavault.jobs.runner import JobRunner
from condavault.memory import limit_malloc_arenas, trim
from condavault.packages.ingest import Ingestor
from condavault.serving.lookup import Lookup, Target
from condavault.storage.local import LocalBlobStore

log = logging.getLogger(__name__)
EXTRAS_DELAY = 1.0
EXTRAS_SHARE = 0.2  # the slow lane may use at most about this share of the time


@dataclass
class Context:
    settings: Settings
    db: Database
    blobs: LocalBlobStore
    indexer: Indexer
    ingestor: Ingestor
    runner: JobRunner
    auth: AuthService
    channels: ChannelDirectory
    lookup: Lookup
    started: float = field(default_factory=time.time)
    _extras_due: dict[int, float] = field(default_factory=dict)
    _extras_lock: threading.Lock = field(default_factory=threading.Lock)
    _extras_cost: dict[int, float] = field(default_factory=dict)  # seconds the last slow-lane run took
    _held: Counter[int] = field(default_factory=Counter)  # channel id -> runs holding its index (hold_index)

    @classmethod
    def build(cls, settings: Settings, *, start_jobs: bool = True) -> Context:
        limit_malloc_arenas()  # before the job and web threads start (see condavault.memory)
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = Database(settings.db_url)
        blobs = LocalBlobStore(settings.blobs_path)
        indexer = Indexer(settings, db, blobs)
        runner = JobRunner(settings.job_threads)
        ctx = cls(
            settings=settings,
            db=db,
            blobs=blobs,
            indexer=indexer,
            ingestor=None,  # type: ignore[arg-type]
            runner=runner,
            auth=AuthService(db),
            channels=ChannelDirectory(db),
            lookup=Lookup(db),
        )
        indexer.listeners.append(lambda cid, _sd: ctx.lookup.invalidate(cid))
        ctx.ingestor = Ingestor(settings, db, blobs, on_change=ctx.request_index)
        indexer.after_publish.append(lambda cid, _sd: ctx.request_extras(cid))
        if start_jobs and settings.worker:
            runner.every(1.0, ctx.sweep, "index-sweep")
            runner.every(3600.0, indexer.expire_old_shards, "shard-expiry")
            runner.every(600.0, ctx.sweep_temp_files, "temp-sweep")
        return ctx

    # -- hooks other domains fill in -----------------------------------------------------------------
    download_listeners: list[Callable[..., None]] = field(default_factory=list)
    missing_fetchers: list[Callable[..., Awaitable[Target | None]]] = field(default_factory=list)

    change_listeners: list[Callable[..., None]] = field(default_factory=list)
    # services one domain offers another, e.g. extensions["vulns"] for the mirror CVE filters
    extensions: dict[str, Any] = field(default_factory=dict)
    ingest_listeners: list[Callable[..., None]] = field(default_factory=list)
    # channels whose index the sweep leaves alone because a run elsewhere (another process) is writing them
    # and publishes them itself, e.g. the mirror domain's running mirrors
    index_holds: list[Callable[[], Collection[int]]] = field(default_factory=list)

    def record_change(
        self, identity: object, action: str, target: str, before: object = None, after: object = None
    ) -> None:
        """An administrative change happened (the audit domain listens)."""
        for fn in self.change_listeners:
            fn(identity, action, target, before, after)

    def on_ingested(self, result: object, identity: object) -> None:
        for fn in self.ingest_listeners:
            try:
                fn(result, identity)
            except Exception:
                log.exception("ingest listener failed")

    def on_channel_created(self, session: object, channel: object, identity: object) -> None:
        """The creator of a channel owns it (unless it is a global admin, who needs no grant)."""
        from sqlalchemy import select

        from condavault.auth.models import Grant, Role

        user_id = getattr(identity, "user_id", None)
        if user_id is None or getattr(identity, "is_admin", False):
            return
        role_id = session.scalar(select(Role.id).where(Role.name == "owner"))  # type: ignore[attr-defined]
        session.add(Grant(role_id=role_id, user_id=user_id, channel_id=channel.id))  # type: ignore[attr-defined]
        session.flush()  # type: ignore[attr-defined]
        self.auth.invalidate()

    def on_download(self, request: object, identity: object, channel: object, subdir: str, target: Target) -> None:
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
        self.runner.submit_coalesced(
            ("index", channel_id, subdir), lambda: self.indexer.index_subdir(channel_id, subdir)
        )

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
        for channel_id, subdir in pending:
            if channel_id not in held:
                self.request_index(channel_id, subdir)
        now = time.monotonic()
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
        from sqlalchemy import select

        from condavault.indexing.models import SubdirState

        with self.db.session() as s:
            all_subdirs = list(s.scalars(select(SubdirState.subdir).where(SubdirState.channel_id == channel_id)))
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
        self.runner.shutdown(wait=True)
        self.db.dispose()
