"""The one path every package takes into condavault (design.md §1.1).

receive the bytes while hashing (a temp file; or memory, for small files) → check size and hashes
against what the sender expects → validate the archive and read ``info/`` (pure: ``packages.spool``)
→ run the configured checks (``Ingestor.checks``, e.g. a malware scan) → pin and store the blob under
its sha256 (durable before its row) → insert the record rows in one transaction that also records the
events (``RecordsChanged``: the index follows; ``PackagesIngested``: durable follow-up work such as CVE
matching). Any failure before the row insert leaves nothing behind (the temp file is removed; a blob
written for nothing is deleted unless another ingest uses the same bytes, see ``channels.blobs``).

Two phases, so a batch can share the costly parts: :meth:`Ingestor.check` (CPU only: hashes, archive
walk, checks) and :meth:`Ingestor.store` (I/O: the blobs of a whole batch made durable with one barrier,
the rows written in one transaction, each touched subdir marked dirty once). A bad file of a batch is
reported with its own error and the others land. :meth:`Ingestor.ingest_many` is both phases for a
batch; :meth:`Ingestor.ingest` a batch of one. The mirror checks each file as it arrives and stores
batches; upload batches (``channels.uploads``) store each request's files as one batch.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.blobs import BlobGuard
from condavault.channels.events import IngestedFile, PackagesIngested, RecordsChanged
from condavault.channels.models import Channel, Record
from condavault.channels.records import NewRecord, Outcome, put_records
from condavault.channels.services import get_channel
from condavault.config import Settings
from condavault.db.session import Database
from condavault.errors import Conflict, NotFound
from condavault.events import EventBus
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.jobs.holders import new_holder
from condavault.packages import spool as sp
from condavault.packages.archive import Limits, Visit
from condavault.packages.metadata import PackageMetadata
from condavault.packages.spool import Received
from condavault.packages.validation import check_record
from condavault.storage.interfaces import BlobStore
from condavault.storage.local import run_all

__all__ = ["IngestItem", "IngestResult", "Ingested", "Ingestor", "Received"]
FOLLOW_UP_COALESCE = 1.0  # seconds the follow-up job of a batch writer's group waits for the next groups


@dataclass
class IngestResult:
    channel: str
    subdir: str
    filename: str
    sha256: str
    md5: str
    size: int
    status: str  # created | unchanged | replaced | skipped
    change_seq: int = 0
    security: dict[str, Any] | None = None
    follow_up: list[int] = field(default_factory=list)  # jobs of the after-commit work (CVE matching)

    def to_dict(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "subdir": self.subdir,
            "filename": self.filename,
            "sha256": self.sha256,
            "md5": self.md5,
            "size": self.size,
            "status": self.status,
        }


@dataclass
class IngestItem:
    """One spooled file of a batch, with what its sender expects of it."""

    received: Received
    filename: str
    expected_subdir: str | None = None
    expected_sha256: str | None = None
    expected_md5: str | None = None
    expected_size: int | None = None
    force: bool = False  # replace other bytes under the same name
    record_overrides: dict[str, Any] | None = None  # record fields that win over the archive's (a mirror's upstream)
    source_url: str | None = None


@dataclass
class Ingested:
    """One item through the phases: ``meta``/``record`` once checked, then a ``result``; or the ``error``
    that rejected it."""

    item: IngestItem
    meta: PackageMetadata | None = None
    record: dict[str, Any] = field(default_factory=dict)
    staged: Any = None  # the blob written ahead (Ingestor.stage), to be committed by store()
    result: IngestResult | None = None
    error: Exception | None = None
    new_blob: bool = False
    held: Exception | None = None  # set by a check (a quarantine verdict): stored by store() via on_hold, not indexed
    notes: dict[str, Any] = field(default_factory=dict)  # what checks found, for the on_write/on_hold hooks

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def subdir(self) -> str:
        assert self.meta is not None
        return self.meta.subdir

    def set_result(self, channel: str, outcome: Outcome, seq: int, follow_up: list[int]) -> None:
        received, meta = self.item.received, self.meta
        assert meta is not None
        self.result = IngestResult(
            channel=channel,
            subdir=meta.subdir,
            filename=self.item.filename,
            sha256=received.sha256,
            md5=received.md5,
            size=received.size,
            status=outcome.status,
            change_seq=seq,
            security=meta.security,
            follow_up=follow_up if outcome.status != "unchanged" else [],
        )


class Ingestor:
    """Ingest for one process. ``index`` False (a copy made with :meth:`without_index`): the writer
    publishes the index itself (a mirror run, an upload batch), so storing asks for no index run.
    ``checks`` run on each file after its metadata is read (phase one); a check raises an
    ``InvalidPackage`` subclass to reject the file (the place for a malware scan)."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, events: EventBus) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.events = events
        self.index = True
        self.wake_workers = True
        self.checks: list[Callable[[Ingested], None]] = []
        # run in the transaction that writes the rows of a group (``search``: the files inside packages),
        # with ``index`` (False: the writer publishes the index later; what follows a publish may wait for it)
        self.row_hooks: list[Callable[[Session, int, list[Ingested], bool], None]] = []
        # a visitor of every archive member in the archive walk (the malware scan: one pass, not two)
        self.visitor: Callable[[Ingested], Visit] | None = None
        # before the blobs of checked files are stored, with the channel id: may hold a file back (a channel policy)
        self.pre_store: list[Callable[[int, list[Ingested]], None]] = []
        # in the record transaction of each written group (e.g. the scan verdicts)
        self.on_write: list[Callable[[Session, list[Ingested]], None]] = []
        # files a check held back (``Ingested.held``), their blobs durable: (session, channel id, files, actor)
        self.on_hold: list[Callable[[Session, int, list[Ingested], str | None], None]] = []
        self.guard = BlobGuard(db, blobs, new_holder())
        self.limits = Limits(
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_members=settings.max_members,
        )

    def without_index(self) -> Ingestor:
        other = copy.copy(self)
        other.index = False
        return other

    def running_follow_up(self) -> Ingestor:
        """For a caller that runs the follow-up jobs of what it stores itself, at once (``JobWorker.run_here``:
        an upload that answers once its effects are there): their enqueueing wakes no worker thread. Woken,
        every worker thread of the process would race the caller for the job -- reads and write
        transactions that all but one lose, at every upload. Should the caller not run it (killed), the
        job is queued and durable: the workers' poll finds it within a second."""
        other = copy.copy(self)
        other.wake_workers = False
        return other

    # -- receiving bytes -------------------------------------------------------------------------
    def spool(self, chunks: Iterable[bytes]) -> Received:
        return sp.spool(self.blobs.temp_file, self.settings.max_upload_bytes, chunks)

    async def aspool(self, chunks: AsyncIterator[bytes]) -> Received:
        return await sp.aspool(self.blobs.temp_file, self.settings.max_upload_bytes, chunks)

    def spool_file(self, path: Path) -> Received:
        return sp.spool_file(self.blobs.temp_file, self.settings.max_upload_bytes, path)

    # -- validating and storing ------------------------------------------------------------------
    def inspect(
        self, received: Received, filename: str, expected_subdir: str | None, visit: Visit | None = None
    ) -> PackageMetadata:
        return sp.inspect(received, filename, self.limits, expected_subdir, visit)

    def ingest(
        self,
        channel_name: str,
        received: Received,
        filename: str,
        *,
        expected_subdir: str | None = None,
        expected_sha256: str | None = None,
        expected_md5: str | None = None,
        expected_size: int | None = None,
        force: bool = False,
        actor: str | None = None,
        record_overrides: dict[str, Any] | None = None,
        source_url: str | None = None,
    ) -> IngestResult:
        """Validate and store a received upload (a batch of one). The temp file is consumed in every case."""
        item = IngestItem(
            received,
            filename,
            expected_subdir=expected_subdir,
            expected_sha256=expected_sha256,
            expected_md5=expected_md5,
            expected_size=expected_size,
            force=force,
            record_overrides=record_overrides,
            source_url=source_url,
        )
        try:
            self._check_sums(item)
        except BaseException:
            received.discard()
            raise
        (done,) = self.ingest_many(channel_name, [item], actor=actor)
        if done.error is not None:
            raise done.error
        assert done.result is not None
        return done.result

    def ingest_many(self, channel_name: str, items: list[IngestItem], *, actor: str | None = None) -> list[Ingested]:
        """:meth:`check` then :meth:`store` a batch of files into one channel. An unknown channel raises
        before any archive is walked (nothing lands); a bad file is reported in its :class:`Ingested`."""
        try:
            with self.db.session() as s:
                get_channel(s, channel_name)
        except BaseException:
            for item in items:
                item.received.discard()
            raise
        return self.store(channel_name, [self.check(item) for item in items], actor=actor)

    def check(self, item: IngestItem) -> Ingested:
        """Phase one, CPU only (no DB, no writes): size and hashes against the expected ones, then the
        archive walk, its metadata and the checks. Errors are kept in the result, never raised."""
        b = Ingested(item)
        try:
            self._check_sums(item)
            received = item.received
            visit = self.visitor(b) if self.visitor is not None else None
            meta = self.inspect(received, item.filename, item.expected_subdir, visit)
            record = dict(meta.record)
            if item.record_overrides:
                record.update(item.record_overrides)  # e.g. a mirror keeps upstream's patched fields
                check_record(record, source="repodata", filename=item.filename)
            record.update(md5=received.md5, sha256=received.sha256, size=received.size)
            b.meta, b.record = meta, record
            for check in self.checks:
                check(b)
        except Exception as exc:  # reported with this file; the rest of a batch goes on
            b.error = exc
        return b

    def stage(self, b: Ingested) -> Ingested:
        """Between the phases: write the blob ahead (the slow file system part, see
        ``BlobStore.stage``); :meth:`store` then only commits it. Raises on an I/O error (the item is
        then to be dropped with :meth:`discard`). Only :meth:`store` calls it, after pinning the blob."""
        if b.ok and b.staged is None:
            received = b.item.received
            source = received.data if received.data is not None else received.path
            assert source is not None
            b.staged = self.blobs.stage(source, received.sha256)
            received.path, received.data = None, None  # the staged file holds the bytes now
        return b

    def discard(self, b: Ingested) -> None:
        """Drop an item that will not be stored: its temp file, its staged blob."""
        if b.staged is not None:
            self.blobs.discard_staged([b.staged])
        b.item.received.discard()

    def store(self, channel_name: str, batch: list[Ingested], *, actor: str | None = None) -> list[Ingested]:
        """Phase two for checked files: refuse other bytes under an existing name (unless ``force``), pin
        the blobs, make them durable with one barrier, then write the rows and the events in one
        transaction. Returns ``batch``, each with a ``result`` or an ``error``. Every temp file is
        consumed. An unknown channel raises (nothing lands)."""
        pinned: list[str] = []
        try:
            with self.db.session() as s:
                channel_id = get_channel(s, channel_name).id
            live = [b for b in batch if b.ok]
            if live:
                self._precheck_conflicts(channel_id, channel_name, live)  # a 409 must not leave a blob behind
                live = [b for b in live if b.ok]
                for hook in self.pre_store:
                    hook(channel_id, live)
            pinned = [b.item.received.sha256 for b in live]
            self.guard.pin(pinned)  # from here until the rows commit, no delete takes these blobs
            run_all(self.stage, [(b,) for b in live if b.staged is None])
            staged = [b.staged for b in live]
            for b, is_new in zip(live, self.blobs.commit(staged), strict=True):  # type: ignore[arg-type]
                b.new_blob = is_new
                b.staged = None
        except BaseException:
            if pinned:
                self.guard.unpin_now(pinned)
            raise
        finally:
            for b in batch:
                self.discard(b)
        held = [b for b in live if b.held is not None]
        if held:
            live = [b for b in live if b.held is None]
            self._hold(channel_id, held, actor)
        if live:
            self._write(channel_id, channel_name, live, actor)
        return batch

    def _hold(self, channel_id: int, held: list[Ingested], actor: str | None) -> None:
        """Files a check held back (quarantine): their blobs are durable; the ``on_hold`` hooks record
        them (never as records), then each reports its ``held`` error."""

        def work(s: Session) -> None:
            for hook in self.on_hold:
                hook(s, channel_id, held, actor)
            self.guard.unpin(s, [b.item.received.sha256 for b in held])

        try:
            self.db.run_write(work)
        except Exception as exc:
            for b in held:
                self._failed(b, exc)
            return
        for b in held:
            b.error = b.held

    # -- the steps -------------------------------------------------------------------------------
    @staticmethod
    def _check_sums(item: IngestItem) -> None:
        sp.check_sums(
            item.received,
            item.filename,
            expected_size=item.expected_size,
            expected_sha256=item.expected_sha256,
            expected_md5=item.expected_md5,
        )

    def _precheck_conflicts(self, channel_id: int, channel_name: str, live: list[Ingested]) -> None:
        """Refuse other bytes under an existing name (unless ``force``) before storing any blob. The
        row insert checks again, in its transaction."""
        by_subdir: dict[str, list[str]] = defaultdict(list)
        for b in live:
            by_subdir[b.subdir].append(b.item.filename)
        shas: dict[tuple[str, str], str | None] = {}
        with self.db.session() as s:
            for sd, fns in by_subdir.items():
                for i in range(0, len(fns), 500):
                    q = select(Record.filename, Record.sha256).where(
                        Record.channel_id == channel_id, Record.subdir == sd, Record.filename.in_(fns[i : i + 500])
                    )
                    shas.update(((sd, fn), sha) for fn, sha in s.execute(q))
        for b in live:
            key = (b.subdir, b.item.filename)
            if key in shas and shas[key] != b.item.received.sha256 and not b.item.force:
                b.error = Conflict(
                    f"{key[0]}/{key[1]} already exists in channel {channel_name!r} with different content",
                    code="filename_conflict",
                    channel=channel_name,
                    filename=key[1],
                    existing_sha256=shas[key],
                )

    def _write(self, channel_id: int, channel_name: str, live: list[Ingested], actor: str | None) -> None:
        """The rows of ``live`` in one transaction; if it fails (a row conflicts with one written meanwhile),
        each row in a transaction of its own, so only the culprit fails. A file whose row could not be
        written leaves no blob behind (unless something else uses the same bytes)."""

        def write(session: Session, group: list[Ingested]) -> list[tuple[Outcome, int, list[int]]]:
            channel = session.get(Channel, channel_id)
            if channel is None:
                raise NotFound(f"channel {channel_name!r} was deleted meanwhile", code="channel_not_found")
            entries = []
            for b in group:
                assert b.meta is not None
                entries.append(
                    NewRecord(
                        b.subdir,
                        b.item.filename,
                        b.record,
                        about=b.meta.about,
                        run_exports=b.meta.run_exports,
                        paths_summary=b.meta.paths_summary,
                        force=b.item.force,
                        uploaded_by=actor,
                        source_url=b.item.source_url,
                    )
                )
            dirty: dict[str, set[str]] = {}
            outcomes = put_records(session, channel, entries, dirty=dirty)
            for row_hook in self.row_hooks:
                row_hook(session, channel_id, group, self.index)
            for write_hook in self.on_write:
                write_hook(session, group)
            self.guard.unpin(session, [b.item.received.sha256 for b in group])
            jobs = self._record_events(session, channel_id, channel_name, group, outcomes, actor)
            # last: marking takes the subdir's row lock, held until the commit (concurrent requests
            # into the same subdir wait for it only that long, not for the whole transaction)
            seqs = {sd: mark_dirty(session, channel_id, sd, names) for sd, names in sorted(dirty.items())}
            for sd in {b.subdir for b in group} - set(seqs):
                state = get_state(session, channel_id, sd, create=False)
                seqs[sd] = state.change_seq if state else 0
            return [(o, seqs[b.subdir], jobs) for o, b in zip(outcomes, group, strict=True)]

        try:
            done = self.db.run_write(lambda s: write(s, live))
        except Exception:
            # One row spoiled the batch -- a conflict, or (PostgreSQL) a unique violation because another
            # request inserted the same file meanwhile: each on its own, once more, so only a real culprit
            # fails (the same bytes written meanwhile are then "unchanged").
            for b in live:
                try:
                    ((outcome, seq, jobs),) = self.db.run_write(lambda s, b=b: write(s, [b]))  # type: ignore[misc]
                except Exception as exc:
                    self._failed(b, exc)
                else:
                    b.set_result(channel_name, outcome, seq, jobs)
            return
        for b, (outcome, seq, jobs) in zip(live, done, strict=True):
            b.set_result(channel_name, outcome, seq, jobs)

    def _record_events(
        self,
        session: Session,
        channel_id: int,
        channel_name: str,
        group: list[Ingested],
        outcomes: list[Outcome],
        actor: str | None,
    ) -> list[int]:
        """The events of a written group; returns the ids of their durable follow-up jobs."""
        files = []
        for b, o in zip(group, outcomes, strict=True):
            if o.status != "unchanged":
                assert b.meta is not None
                files.append(IngestedFile(channel_name, b.subdir, b.item.filename, o.status, b.meta.security))
        if not files:
            return []
        subdirs = tuple(sorted({f.subdir for f in files}))
        self.events.record(session, RecordsChanged(channel_id, subdirs, index=self.index))
        # a writer that publishes the index itself (an upload batch, a mirror run) sends many groups in a
        # row and waits for none of their follow-up work: one job for the groups of the next moment
        coalesce = 0.0 if self.index else FOLLOW_UP_COALESCE
        return self.events.record(
            session,
            PackagesIngested(channel_id, channel_name, tuple(files), actor),
            coalesce=coalesce,
            wake=self.wake_workers,
        )

    def _failed(self, b: Ingested, exc: Exception) -> None:
        b.error = exc
        sha = b.item.received.sha256
        if b.new_blob:
            self.guard.delete_if_unreferenced(sha)  # also drops our pin
        else:
            self.guard.unpin_now([sha])
