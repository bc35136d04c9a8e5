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
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select, update

from condavault.channels.models import Channel, Record
from condavault.errors import Busy, NotFound
from condavault.outbound import UrlPolicy, sync_transport
from condavault.vulns import catalog, scoring, services, store
from condavault.vulns.mapping import NameMapping, load_cpe_table, load_mapping_file
from condavault.vulns.models import VulnRecordState, VulnSource
from condavault.vulns.provider import VulnProvider
from condavault.vulns.sources.loader import SourceContent, read_source
from condavault.vulns.sync import (
    Fetched,
    Progress,
    SyncReport,
    fetch_url,
    file_hash,
    is_url,
    remember,
    resolve_local,
)

if TYPE_CHECKING:
    from condavault.context import Context
    from condavault.jobs.registry import JobRun

log = logging.getLogger(__name__)
SYNC_KIND = "vulns.sync"
SYNC_LOCK = "vulns.sync"  # syncs, scheduled refreshes and drop-folder imports never overlap
SWEEP_BATCH = 5000
MATCH_BATCH = 50
MAPPING_FRESHNESS = 1.0  # seconds between checks of the mapping generation


class VulnRuntime:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._mapping: NameMapping | None = None
        self._mapping_gen: int | None = None
        self._mapping_checked = 0.0
        self._mapping_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._match_lock = threading.Lock()
        self.provider = VulnProvider(ctx.db, self.mapping)
        s = ctx.settings
        self.preference = scoring.check_preference(s.vulns_score_preference)

    # -- mapping -----------------------------------------------------------------------------------
    def build_mapping(self, session: Any) -> NameMapping:
        """The name mapping as stored now: shipped tables + synced entries + ``vulns_mapping_file``."""
        s = self.ctx.settings
        entries = catalog.name_entries(session)
        if s.vulns_mapping_file is not None:
            entries += [(e, str(s.vulns_mapping_file)) for e in load_mapping_file(s.vulns_mapping_file)]
        return NameMapping(
            load_cpe_table(s.vulns_cpe_mapping_file),
            entries,
            feed_priority=s.vulns_feed_priority,
            match_bundled=s.vulns_match_bundled,
        )

    def mapping(self, *, fresh: bool = False) -> NameMapping:
        """The current name mapping, rebuilt when a sync (in any process) changed the synced entries.
        ``fresh`` looks at the stored generation now (after this process's own commit): the recent-check
        shortcut could hand out a mapping another thread confirmed just before that commit."""
        now = time.monotonic()
        if not fresh and self._mapping is not None and now - self._mapping_checked < MAPPING_FRESHNESS:
            return self._mapping
        with self._mapping_lock:
            with self.ctx.db.session() as s:
                gen = store.get_meta(s, "mapping") or 0
                if self._mapping is None or gen != self._mapping_gen:
                    self._mapping, self._mapping_gen = self.build_mapping(s), gen
            self._mapping_checked = now
            return self._mapping

    def startup(self) -> None:
        """Re-score every advisory when ``vulns_score_preference`` changed since the last start."""
        fingerprint = zlib.crc32(json.dumps(list(self.preference)).encode())
        with self.ctx.db.session() as s:
            if store.get_meta(s, "score_preference") == fingerprint:
                return
        with self.ctx.db.write_session() as s:
            store.lock_catalog(s)
            changed = catalog.rescore(s, self.preference)
            store.set_meta(s, "score_preference", fingerprint)
        if changed:
            log.info("effective scores recomputed", extra={"advisories": changed, "preference": list(self.preference)})

    # -- syncing -----------------------------------------------------------------------------------
    def sync(
        self,
        locations: list[str] | None = None,
        progress: Progress | None = None,
        names: dict[str, str] | None = None,
    ) -> SyncReport:
        """Fetch, parse, store, merge and match. ``None`` syncs the configured ``vulns_sources``;
        ``names`` gives sources a name other than their location (uploads)."""
        if not self._sync_lock.acquire(blocking=False):
            raise Busy("a vulnerability sync is already running", code="vuln_sync_running")
        try:
            return self._sync(list(locations or self.ctx.settings.vulns_sources), progress, names or {})
        finally:
            self._sync_lock.release()

    def _sync(self, locations: list[str], progress: Progress | None, names: dict[str, str]) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        note = progress or (lambda *_: None)
        cache = self.ctx.settings.data_dir / "vulns" / "cache"
        fetched: list[Fetched] = []
        policy = UrlPolicy.from_settings(self.ctx.settings)  # no source reaches where the server may not
        for loc in locations:
            if is_url(loc):
                policy.check_url(loc, what="vulnerability source")
        timeout = self.ctx.settings.mirror_timeout
        with httpx.Client(transport=sync_transport(policy), timeout=timeout, follow_redirects=True) as http:
            for i, loc in enumerate(locations):
                note("fetch", i, len(locations))
                if is_url(loc):
                    with self.ctx.db.session() as s:
                        fetched.append(fetch_url(s, loc, cache, client=http, timeout=timeout))
                else:
                    fetched.append(resolve_local(loc, names.get(loc)))
        note("fetch", len(locations), len(locations))
        for i, f in enumerate(fetched):
            note("store", i, len(fetched))
            report.sources.append(self._store_source(f, report))
        note("store", len(fetched), len(fetched))
        self._match_pending(report, note)
        self.provider.invalidate()
        report.seconds = round(time.perf_counter() - started, 3)
        log.info("vulnerability sync done", extra={"sync": report.to_dict()})
        return report

    def _store_source(self, f: Fetched, report: SyncReport) -> dict[str, Any]:
        """Parse one source and, in one transaction, store its records and name entries and re-merge the
        advisories they touch (the changed ones are marked for matching, which survives a crash)."""
        content = read_source(f.path) if f.path is not None else SourceContent()
        with self.ctx.db.write_session() as s:
            store.lock_catalog(s)
            src = catalog.source_pk(s, f.label)
            stored = catalog.store_records(s, src, content.advisories)
            mapping_changed = bool(content.mapping_files) and catalog.store_name_entries(s, src, content.names)
            mapping = self.build_mapping(s) if mapping_changed else self.mapping(fresh=True)
            merged = catalog.remerge(s, stored.touched, mapping, self.preference)
            if mapping_changed:
                pks, _names = store.reindex_names(s, mapping)
                store.mark_pending(s, pks)
            remember(s, f, len(content.advisories), len(content.names), f"ok: {f.status}")
        if mapping_changed:
            self._mapping_checked = 0.0
        report.records += len(content.advisories)
        report.records_new += stored.new
        report.records_changed += stored.changed
        report.records_unchanged += stored.unchanged
        report.names += len(content.names)
        report.advisories += merged.created + merged.updated + merged.unchanged
        report.created += merged.created
        report.updated += merged.updated
        report.unchanged += merged.unchanged
        report.removed += merged.removed
        log.info(
            "vulnerability source stored",
            extra={"source": f.label, "records": len(content.advisories), "names": len(content.names)},
        )
        return {
            "location": f.label,
            "status": f.status,
            "records": len(content.advisories),
            "new": stored.new,
            "changed": stored.changed,
            "unchanged": stored.unchanged,
            "names": len(content.names),
            "mapping_changed": mapping_changed,
        }

    def _match_pending(self, report: SyncReport | None = None, note: Progress | None = None, wait: bool = True) -> int:
        """Re-match every advisory marked pending, in small transactions; returns how many. ``wait=False``
        (the periodic sweep) skips the round while a sync of this process is matching."""
        if not self._match_lock.acquire(blocking=wait):
            return 0
        try:
            return self._match_pending_locked(report, note)
        finally:
            self._match_lock.release()

    def _match_pending_locked(self, report: SyncReport | None, note: Progress | None) -> int:
        mapping = self.mapping(fresh=True)
        done = 0
        with self.ctx.db.session() as s:
            total = len(store.pending_advisories(s, 10**9))
        while True:
            with self.ctx.db.session() as s:
                pks = store.pending_advisories(s, MATCH_BATCH)
            if not pks:
                break
            if note is not None:
                note("match", done, total)
            with self.ctx.db.write_session() as s:
                stats = services.match_advisories(s, pks, mapping)
            done += len(pks)
            if report is not None:
                report.records_checked += stats.records
                report.links_added += stats.links_added
                report.links_removed += stats.links_removed
                report.links_updated += stats.links_updated
        if note is not None:
            note("match", done, total)
        return done

    def remove_source(self, source_id: int) -> dict[str, Any]:
        """Forget a source: its records and name entries go, the advisories they were part of are re-merged
        (and removed when nothing else describes them) and re-matched."""
        busy = self.ctx.jobs.active(SYNC_LOCK)
        if busy is not None or not self._sync_lock.acquire(blocking=False):
            raise Busy("a vulnerability sync is running; try again when it is done", code="vuln_sync_running")
        try:
            with self.ctx.db.write_session() as s:
                store.lock_catalog(s)
                row = s.get(VulnSource, source_id)
                if row is None:
                    raise NotFound(f"no vulnerability source {source_id}", code="vuln_source_not_found")
                location, had_names = row.location, row.names > 0
                merged = catalog.remove_source(s, source_id, self.mapping(), self.preference)
                if had_names:  # the mapping lost entries: re-index the names of every advisory
                    pks, _names = store.reindex_names(s, self.build_mapping(s))
                    store.mark_pending(s, pks)
            self._mapping_checked = 0.0
            report = SyncReport(updated=merged.updated, removed=merged.removed, created=merged.created)
            self._match_pending(report)
            self.provider.invalidate()
            return {"location": location, **report.to_dict()}
        finally:
            self._sync_lock.release()

    # -- as durable jobs (kinds registered by condavault.wiring) ---------------------------------------
    def start_job(
        self,
        locations: list[str] | None,
        cleanup: Path | None = None,
        created_by: str | None = None,
        claim: bool = False,
        names: dict[str, str] | None = None,
    ) -> int:
        """Enqueue a sync (kind ``vulns.sync``); 409 while another one is queued or running. ``claim``:
        the caller runs it at once (``JobWorker.run_claimed``)."""
        busy = self.ctx.jobs.active(SYNC_LOCK)
        if busy is not None:
            if cleanup is not None:
                cleanup.unlink(missing_ok=True)
            raise Busy(f"a vulnerability sync is already running (job {busy})", code="vuln_sync_running", job=busy)
        params = {
            "sources": list(locations or self.ctx.settings.vulns_sources),
            "cleanup": str(cleanup) if cleanup else None,
            "names": names or {},
        }
        return self.ctx.jobs.enqueue(SYNC_KIND, params, lock_key=SYNC_LOCK, created_by=created_by, claim=claim)

    def job(self, job_id: str) -> dict[str, Any]:
        """A sync job in the shape ``GET /api/cves/sync/jobs/{id}`` has always answered."""
        try:
            job = self.ctx.jobs.get(int(job_id))
        except (ValueError, NotFound):
            job = None
        if job is None or job["kind"] != SYNC_KIND:
            raise NotFound(f"no sync job {job_id!r}", code="sync_job_not_found")
        state = {"succeeded": "done", "cancelled": "failed"}.get(job["state"], job["state"])
        return {
            "id": str(job["id"]),
            "sources": job["params"].get("sources", []),
            "state": state,
            "phase": job["phase"],
            "done": job["done"],
            "total": job["total"] or 0,
            "result": job["result"],
            "error": job["error"],
            "started": job["created_at"].timestamp(),
            "job_id": job["id"],
        }

    def run_sync_job(self, run: JobRun) -> dict[str, Any]:
        def progress(phase: str, done: int, total: int) -> None:
            run.progress(phase=phase, done=done, total=total)

        cleanup = run.params.get("cleanup")
        try:
            return self.sync(run.params.get("sources") or None, progress, names=run.params.get("names") or {}).to_dict()
        finally:
            if cleanup:
                Path(cleanup).unlink(missing_ok=True)

    def refresh(self) -> None:
        """The scheduled refresh of ``vulns_sources`` (hourly by default)."""
        if self.ctx.settings.vulns_sources:
            self.sync(None)

    def import_dropdir(self) -> None:
        """The air-gap path: import feeds dropped in ``vulns_import_dir`` that changed since last time."""
        folder = self.ctx.settings.vulns_import_dir
        if folder is None or not folder.is_dir():
            return
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
            self._match_pending(wait=wait)  # advisories a killed sync left unmatched
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
