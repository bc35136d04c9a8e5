"""Wire the search domain into a Context (called by ``condavault.wiring``).

How the search tables follow changes:

* an ingest (upload, mirror download, passive fetch) writes the files inside each package in the
  transaction that writes the records (``Ingestor.row_hooks``); an ingest that asks for an index run (an
  upload of one file) also writes the documents of its names there: searchable as soon as the upload is
  answered;
* an ingest whose writer publishes the index itself (the requests of an upload batch, a mirror run:
  ``RecordsChanged.index`` False) leaves the documents to that publish: each document is written once
  per batch, not once per request and again after each commit (concurrent requests each saw only their
  own rows of a name, so the sync after their commits rewrote them);
* every change of records (removal, copy, move, mirror run, repodata patch) ends in an index run of its
  subdir, which knows the names it changed: after the publish, the documents of those names (of every
  name of the subdir after a full rebuild) are brought up to date on the job runner
  (:func:`condavault.search.index.sync_channel`, coalesced per channel);
* channel privacy needs nothing (queries filter by readable channel ids); a deleted channel's rows go
  with it (foreign key, cascade);
* ``search.sweep`` (every few seconds, quiet) refreshes the CVE score bands when links or scores
  changed and repairs channels whose documents do not add up (e.g. after an upgrade: the backfill);
* ``search.reindex`` rebuilds everything, and reads the file lists of stored archives that have none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.channels.models import Channel, Record
from condavault.indexing.models import SubdirState
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec
from condavault.search import index
from condavault.search.models import SearchPackage
from condavault.search.service import SearchQuery, SearchService

if TYPE_CHECKING:
    from condavault.channels.ingest import Ingested
    from condavault.context import Context

log = logging.getLogger(__name__)
REINDEX_KIND = "search.reindex"
SWEEP_KIND = "search.sweep"
SWEEP_SECONDS = 5.0
# how often the sweep compares channels' records with their documents (for drift only a crash, another
# writer or a bug leaves behind): counting a channel's records reads all of them (3.8 M for a conda-forge
# mirror), so only channels indexed since they were last found in order are counted
DOCUMENTS_CHECK_SECONDS = 60.0
SYNC_NAMES = 2000  # names per write transaction of a sync


class SearchDomain(SearchService):
    """The search service plus the upkeep of its tables."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._scores_fp: str | None = None
        self._lock = threading.Lock()
        # channel id -> the names a queued sync is to look at (None: every name of the channel)
        self._wanted: dict[int, set[str] | None] = {}
        self._wanted_lock = threading.Lock()
        self._documents_checked = -DOCUMENTS_CHECK_SECONDS  # monotonic time of the last documents check
        self._in_order: dict[int, int] = {}  # channel id -> its subdirs' indexed_seq sum when it last added up

    # -- upkeep ------------------------------------------------------------------------------------
    def request_sync(self, channel_id: int, names: Iterable[str] | None = None) -> None:
        """Queue a sync of the channel's documents: of ``names`` (the names whose records changed, as an index
        publish knows them), or of every name when None. Requests made before the sync starts share it."""
        with self._wanted_lock:
            if names is None:
                self._wanted[channel_id] = None
            else:
                names = set(names)
                if not names:
                    return
                if channel_id not in self._wanted:
                    self._wanted[channel_id] = names
                elif (wanted := self._wanted[channel_id]) is not None:
                    wanted |= names
        self.ctx.runner.submit_coalesced(("search", channel_id), lambda: self._sync_wanted(channel_id))

    def _sync_wanted(self, channel_id: int) -> None:
        with self._wanted_lock:
            if channel_id not in self._wanted:
                return
            names = self._wanted.pop(channel_id)
        self.sync(channel_id, sorted(names) if names is not None else None)

    def sync(self, channel_id: int, names: list[str] | None = None) -> int:
        """Bring the channel's documents of ``names`` (None: of every name) up to date; many names a part at
        a time, each in a write transaction of its own (the first index of a mirrored subdir names tens of
        thousands: one transaction would hold SQLite's write lock for all of them)."""
        if names is not None and len(names) > SYNC_NAMES:
            return sum(self.sync(channel_id, names[i : i + SYNC_NAMES]) for i in range(0, len(names), SYNC_NAMES))
        # a read first: after an upload (whose transaction wrote its documents already) there is usually
        # nothing to do, and a sync that writes nothing must not queue for SQLite's write lock
        with self.ctx.db.session() as s:
            if s.get(Channel, channel_id) is None or index.is_up_to_date(s, channel_id, names):
                return 0

        def work(s: Session) -> int:
            if s.get(Channel, channel_id) is None:
                return 0
            return index.sync_channel(s, channel_id, names)

        return self.ctx.db.run_write(work)

    def on_ingest(self, session: Session, channel_id: int, group: list[Ingested], indexed: bool) -> None:
        """In the ingest transaction: the files inside the new packages; the documents of their names
        unless the writer publishes the index later (``indexed`` False: the sync after that publish
        writes them, once for the whole batch)."""
        for b in group:
            if b.meta is not None and b.meta.files:
                index.put_files(session, b.item.received.sha256, b.meta.files)
        names = sorted({str(b.record.get("name")) for b in group if b.record.get("name")})
        if names and indexed:
            index.sync_channel(session, channel_id, names)

    def sweep(self) -> dict[str, int]:
        """Score bands after CVE changes; every DOCUMENTS_CHECK_SECONDS, channels whose documents do not
        match their records. A channel with records not indexed yet (a mirror importing, uploads in flight)
        is left alone: the sync after its index publish brings its documents up to date, and syncing it
        meanwhile would read the whole channel again and again while it grows."""
        out: dict[str, int] = {}
        with self.ctx.db.session() as s:
            fp = index.scores_fingerprint(s)
        now = time.monotonic()
        if now - self._documents_checked >= DOCUMENTS_CHECK_SECONDS:
            self._documents_checked = now
            out["documents"] = sum(self.sync(cid) for cid in self._stale_channels())
        out["scores"] = self.refresh_scores(fp)
        return {k: v for k, v in out.items() if v}

    def _stale_channels(self) -> list[int]:
        """Channels whose documents do not add up to their live records. Counting a channel's records reads
        all of them, so only channels indexed since this process last found them in order are counted (all
        of them after a start: a crash is where drift comes from), and none with index work pending."""
        with self.ctx.db.session() as s:
            seqs: dict[int, int] = {}
            busy = self.ctx.held_channels()
            for cid, indexed, pending in s.execute(
                select(
                    SubdirState.channel_id,
                    func.sum(SubdirState.indexed_seq),
                    func.max(case((SubdirState.change_seq > SubdirState.indexed_seq, 1), else_=0)),
                ).group_by(SubdirState.channel_id)
            ):
                seqs[cid] = int(indexed or 0)
                if pending:
                    busy.add(cid)
            todo = [cid for cid, seq in seqs.items() if cid not in busy and self._in_order.get(cid) != seq]
            stale = []
            for cid in todo:
                want = s.scalar(select(func.count()).where(Record.channel_id == cid, Record.removed.is_(False)))
                have = s.scalar(select(func.sum(SearchPackage.records)).where(SearchPackage.channel_id == cid))
                if int(want or 0) == int(have or 0):
                    self._in_order[cid] = seqs[cid]
                else:
                    stale.append(cid)
            orphans = s.scalars(  # documents of channels without index state (a channel's rows restored by hand)
                select(SearchPackage.channel_id).where(SearchPackage.channel_id.not_in(list(seqs) or [-1])).distinct()
            ).all()
        return sorted({*stale, *orphans})

    def refresh_scores(self, fp: str | None = None) -> int:
        """Bring the CVE score bands up to date if advisories, links or curation changed since the last
        time this process looked (cheap when nothing changed; searches call it first)."""
        if fp is None:
            with self.ctx.db.session() as s:
                fp = index.scores_fingerprint(s)
        if fp == self._scores_fp:
            return 0
        with self._lock:
            if fp == self._scores_fp:
                return 0
            n = self.ctx.db.run_write(index.refresh_scores)
            self._scores_fp = fp
        return n

    def search(self, identity: Identity, query: SearchQuery) -> dict[str, Any]:
        self.refresh_scores()
        return super().search(identity, query)

    def reindex(self, run: JobRun | None = None, files: bool = True) -> dict[str, int]:
        """Rebuild the documents of every channel and the trigrams; read the file lists of stored
        archives that have none (``files``); drop file lists no record references."""
        with self.ctx.db.session() as s:
            channel_ids = list(s.scalars(select(Channel.id).order_by(Channel.id)))
        done = {"channels": 0, "documents": 0, "packages_read": 0, "files": 0, "unreadable": 0, "orphans": 0}
        if run is not None:
            run.progress(phase="documents", done=0, total=len(channel_ids))
        for i, cid in enumerate(channel_ids):
            done["documents"] += self.sync(cid)
            done["channels"] += 1
            if run is not None:
                run.progress(done=i + 1)
        self.ctx.db.run_write(index.rebuild_trigrams)
        self.ctx.db.run_write(index.refresh_scores)
        done["orphans"] = self.ctx.db.run_write(lambda s: index.drop_orphan_files(s))
        if files:
            self._backfill_files(done, run)
        return done

    def _backfill_files(self, done: dict[str, int], run: JobRun | None) -> None:
        from condavault.packages.archive import Limits, read_archive
        from condavault.packages.filename import parse_filename
        from condavault.packages.metadata import file_list

        st = self.ctx.settings
        limits = Limits(st.max_decompressed_bytes, st.max_compression_ratio, st.max_members)
        after = 0
        seen: set[str] = set()
        if run is not None:
            run.progress(phase="files", done=0, total=None)
        while True:
            with self.ctx.db.session() as s:
                batch = index.records_without_files(s, after, 200)
            if not batch:
                return
            for rid, sha, _sd, filename in batch:
                after = rid
                if sha in seen:
                    continue
                seen.add(sha)
                try:
                    with self.ctx.blobs.materialize(sha) as blob_path:
                        info = read_archive(blob_path, parse_filename(filename), limits)
                    rows = file_list(info.json("info/paths.json"), info.files.get("info/files"))
                except Exception as exc:  # a missing or unreadable blob: no file list, the rest goes on
                    done["unreadable"] += 1
                    log.info("no file list for a stored package", extra={"sha256": sha, "error": str(exc)[:200]})
                    continue
                done["files"] += self.ctx.db.run_write(partial(index.put_files, package_sha256=sha, files=rows))
                done["packages_read"] += 1
            if run is not None:
                run.progress(done=done["packages_read"])
                if run.cancelled:
                    return


def wire(ctx: Context) -> SearchDomain:
    dom = SearchDomain(ctx)
    ctx.ingestor.row_hooks.append(dom.on_ingest)

    # Changed records are followed by the index run that publishes them, which knows their names (every
    # write of records marks its names for that run): the sync looks at those names only, not at the whole
    # channel (at 300 k records that look cost more than the upload). The sweep repairs what drifts. (A
    # whole-channel sync after every ChannelChanged of a records change -- an import chunk, a removal, a
    # copy -- cost two reads of every record: 1.3 s a chunk at 1 M records, the import's largest growth.)
    ctx.indexer.listeners.append(lambda cid, _sd, names: dom.request_sync(cid, names))

    def reindex_job(run: JobRun) -> dict[str, Any] | None:
        return dom.reindex(run, files=bool(run.params.get("files", True)))

    def sweep_job(_run: JobRun) -> dict[str, Any] | None:
        return dom.sweep() or None

    ctx.kinds.register(JobKind(REINDEX_KIND, reindex_job, max_attempts=1, description="rebuild the search tables"))
    ctx.kinds.register(
        JobKind(
            SWEEP_KIND,
            sweep_job,
            lane="short",
            quiet=True,
            description="search: CVE score bands, repair stale documents",
        )
    )
    return dom


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [ScheduleSpec(SWEEP_KIND, SWEEP_KIND, every=SWEEP_SECONDS)]
