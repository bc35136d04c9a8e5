"""Background work of the vulns domain: source syncs (scheduled, on demand, air-gap drop folder), the
ingest listener and the sweep over records that were never matched.

:class:`VulnRuntime` is built once per process at start-up (``plugin.py``) and holds the only
in-memory state: the name mapping (loaded lazily from the configured files), the mirror provider's
snapshot and the progress of sync jobs started through the API.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from condavault.channels.models import Channel, Record
from condavault.errors import Busy, NotFound
from condavault.vulns import services, store
from condavault.vulns.mapping import NameMapping
from condavault.vulns.models import VulnRecordState
from condavault.vulns.provider import VulnProvider
from condavault.vulns.sync import (
    Fetched,
    Progress,
    SyncReport,
    fetch_url,
    file_hash,
    is_url,
    load_sources,
    remember,
    resolve_local,
)

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
SWEEP_BATCH = 5000
MATCH_BATCH = 50


@dataclass
class SyncJob:
    id: str
    sources: list[str]
    state: str = "queued"  # queued | running | done | failed
    phase: str = ""
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class VulnRuntime:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._mapping: NameMapping | None = None
        self._mapping_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self.jobs: dict[str, SyncJob] = {}
        self.provider = VulnProvider(ctx.db, self.mapping)

    # -- mapping -----------------------------------------------------------------------------------
    def mapping(self) -> NameMapping:
        if self._mapping is None:
            with self._mapping_lock:
                if self._mapping is None:
                    s = self.ctx.settings
                    self._mapping = NameMapping.load(s.vulns_mapping_file, s.vulns_cpe_mapping_file)
        return self._mapping

    # -- syncing -----------------------------------------------------------------------------------
    def sync(
        self, locations: list[str] | None = None, progress: Progress | None = None, origin: str | None = None
    ) -> SyncReport:
        """Fetch, parse, store and match. ``None`` syncs the configured ``vulns_sources``."""
        if not self._sync_lock.acquire(blocking=False):
            raise Busy("a vulnerability sync is already running", code="vuln_sync_running")
        try:
            return self._sync(list(locations or self.ctx.settings.vulns_sources), progress, origin)
        finally:
            self._sync_lock.release()

    def _sync(self, locations: list[str], progress: Progress | None, origin: str | None) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        note = progress or (lambda *_: None)
        cache = self.ctx.settings.data_dir / "vulns" / "cache"
        fetched: list[Fetched] = []
        for i, loc in enumerate(locations):
            note("fetch", i, len(locations))
            if is_url(loc):
                with self.ctx.db.session() as s:
                    fetched.append(fetch_url(s, loc, cache, timeout=self.ctx.settings.mirror_timeout))
            else:
                fetched.append(resolve_local(loc))
        note("fetch", len(locations), len(locations))
        advisories = load_sources(fetched, note)
        report.advisories = len(advisories)
        mapping = self.mapping()
        note("store", 0, len(advisories))
        with self.ctx.db.write_session() as s:
            res = store.upsert_advisories(s, advisories, mapping, origin or ", ".join(locations))
        report.created, report.updated, report.unchanged = res.created, res.updated, res.unchanged
        note("store", len(advisories), len(advisories))
        pks = res.changed_pks or []
        for i in range(0, len(pks), MATCH_BATCH):
            note("match", i, len(pks))
            with self.ctx.db.write_session() as s:
                stats = services.match_advisories(s, pks[i : i + MATCH_BATCH], mapping)
            report.records_checked += stats.records
            report.links_added += stats.links_added
            report.links_removed += stats.links_removed
        note("match", len(pks), len(pks))
        with self.ctx.db.write_session() as s:
            for f in fetched:
                remember(s, f, len(advisories), f"ok: {f.status}")
        self.provider.invalidate()
        report.sources = [{"location": f.location, "status": f.status} for f in fetched]
        report.seconds = round(time.perf_counter() - started, 3)
        log.info("vulnerability sync done", extra={"sync": report.to_dict()})
        return report

    def start_job(self, locations: list[str] | None, cleanup: Path | None = None) -> SyncJob:
        job = SyncJob(id=uuid.uuid4().hex[:12], sources=list(locations or self.ctx.settings.vulns_sources))
        self.jobs[job.id] = job

        def progress(phase: str, done: int, total: int) -> None:
            job.phase, job.done, job.total = phase, done, total

        def run() -> None:
            job.state = "running"
            try:
                job.result = self.sync(job.sources, progress).to_dict()
                job.state = "done"
            except Exception as exc:
                job.state, job.error = "failed", str(exc)
                raise
            finally:
                if cleanup is not None:
                    cleanup.unlink(missing_ok=True)

        self.ctx.runner.submit(run, "vulns-sync")
        return job

    def job(self, job_id: str) -> SyncJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no sync job {job_id!r} on this server", code="sync_job_not_found")
        return job

    def refresh(self) -> None:
        """The scheduled refresh of ``vulns_sources`` (hourly by default)."""
        if self.ctx.settings.vulns_sources:
            self.sync(None)

    def import_dropdir(self) -> None:
        """The air-gap path: import feeds dropped in ``vulns_import_dir`` that changed since last time."""
        folder = self.ctx.settings.vulns_import_dir
        if folder is None or not folder.is_dir():
            return
        from condavault.vulns.models import VulnSource

        todo = []
        with self.ctx.db.session() as s:
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in (".zip", ".json", ".yaml", ".yml") and not path.is_dir():
                    continue
                row = s.scalar(select(VulnSource).where(VulnSource.location == str(path)))
                if row is None or row.content_hash != file_hash(path):
                    todo.append(str(path))
        if todo:
            self.sync(todo)

    # -- records -----------------------------------------------------------------------------------
    def sweep(self, wait: bool = False) -> int:
        """Match records that have no match state yet (imports, mirror inserts, missed events).

        The periodic job skips a round while another sweep runs; ``wait`` (the API) waits for it."""
        if not self._sweep_lock.acquire(blocking=wait):
            return 0
        try:
            total = 0
            mapping = self.mapping()
            while True:
                with self.ctx.db.session() as s:
                    ids = services.unmatched_record_ids(s, SWEEP_BATCH)
                if not ids:
                    break
                with self.ctx.db.write_session() as s:
                    services.match_records(s, ids, mapping)
                total += len(ids)
                if len(ids) < SWEEP_BATCH:
                    break
            if total:
                self.provider.invalidate()
            return total
        finally:
            self._sweep_lock.release()

    def on_ingested(self, result: Any, identity: Any) -> None:
        """Ingest listener: match the new record now and keep its ``info/security.json`` as evidence."""
        if getattr(result, "status", "") not in ("created", "replaced"):
            return
        name = result.filename.rsplit("-", 2)[0]
        with self.ctx.db.session() as s:  # no advisory maps to the name: nothing to do, no write
            if not store.advisory_pks_for_names(s, [name]) and not result.security:
                return
        with self.ctx.db.write_session() as s:
            rid = s.scalar(
                select(Record.id)
                .join(Channel, Channel.id == Record.channel_id)
                .where(
                    Channel.name == result.channel, Record.subdir == result.subdir, Record.filename == result.filename
                )
            )
            if rid is None:
                return
            services.match_records(s, [rid], self.mapping())
            if result.security:  # kept for links created later, by advisories that arrive after the upload
                s.execute(
                    update(VulnRecordState)
                    .where(VulnRecordState.record_id == rid)
                    .values(security=json.dumps(result.security, default=str))
                )
                services.record_evidence(s, rid, result.security)
        self.provider.invalidate()
