"""The one path every package takes into condavault (design.md §1.1).

receive the bytes while hashing (a temp file; or memory, for a mirror's small files) → check size and
hashes against what the sender expects → validate the archive and read ``info/`` → store the blob under
its sha256 (durable before its row) → insert the record row (and mark the subdir dirty) in one
transaction. Any failure before the row insert leaves nothing behind (the temp file is removed).

Two phases, so a batch can share the costly parts: :meth:`Ingestor.check` (CPU only: hashes, archive
walk) and :meth:`Ingestor.store` (I/O: the blobs of a whole batch made durable with one barrier, the
rows written in one transaction, each touched subdir marked dirty once). A bad file of a batch is
reported with its own error and the others land. :meth:`Ingestor.ingest_many` is both phases for a
batch; :meth:`Ingestor.ingest` a batch of one (uploads). The mirror checks each file as it arrives and
stores batches.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.channels.records import NewRecord, Outcome, put_records
from condavault.channels.services import get_channel
from condavault.config import Settings
from condavault.db.session import Database
from condavault.errors import ChecksumMismatch, Conflict, NotFound, PayloadTooLarge
from condavault.indexing.dirty import get_state
from condavault.packages.archive import Limits, read_archive
from condavault.packages.filename import parse_filename
from condavault.packages.metadata import PackageMetadata, build_metadata
from condavault.packages.validation import check_record
from condavault.storage.local import LocalBlobStore, Staged, run_all

CHUNK = 1024 * 1024


@dataclass
class Received:
    """Received bytes: in a temp file (``path``) or, small ones, in memory (``data``)."""

    path: Path | None
    size: int
    md5: str
    sha256: str
    data: bytes | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> Received:
        return cls(None, len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), data)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.data = None


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
    security: dict | None = None

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
    record_overrides: dict | None = None  # record fields that win over the archive's (a mirror's upstream)
    source_url: str | None = None


@dataclass
class Ingested:
    """One item through the phases: ``meta``/``record`` once checked, then a ``result``; or the ``error``
    that rejected it."""

    item: IngestItem
    meta: PackageMetadata | None = None
    record: dict[str, Any] = field(default_factory=dict)
    staged: Staged | None = None  # the blob written ahead (Ingestor.stage), to be committed by store()
    result: IngestResult | None = None
    error: Exception | None = None
    new_blob: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def subdir(self) -> str:
        assert self.meta is not None
        return self.meta.subdir

    def set_result(self, channel: str, outcome: Outcome, seq: int) -> None:
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
        )


class _Spool:
    def __init__(self, blobs: LocalBlobStore, max_bytes: int) -> None:
        fd, self.path = blobs.temp_file()
        self.fh = os.fdopen(fd, "wb")
        self.md5 = hashlib.md5()
        self.sha = hashlib.sha256()
        self.size = 0
        self.max = max_bytes

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max:
            raise PayloadTooLarge(f"upload exceeds the limit of {self.max} bytes", limit=self.max)
        self.md5.update(chunk)
        self.sha.update(chunk)
        self.fh.write(chunk)

    def finish(self) -> Received:
        self.fh.close()
        return Received(self.path, self.size, self.md5.hexdigest(), self.sha.hexdigest())

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: LocalBlobStore,
        on_change: Callable[[int, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.on_change = on_change
        self.limits = Limits(
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_members=settings.max_members,
        )

    # -- receiving bytes -------------------------------------------------------------------------
    def spool(self, chunks: Iterable[bytes]) -> Received:
        sp = _Spool(self.blobs, self.settings.max_upload_bytes)
        try:
            for chunk in chunks:
                sp.write(chunk)
        except BaseException:
            sp.abort()
            raise
        return sp.finish()

    async def aspool(self, chunks: AsyncIterator[bytes]) -> Received:
        sp = _Spool(self.blobs, self.settings.max_upload_bytes)
        try:
            async for chunk in chunks:
                sp.write(chunk)
        except BaseException:
            sp.abort()
            raise
        return sp.finish()

    def spool_file(self, path: Path) -> Received:
        def chunks() -> Iterable[bytes]:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self.spool(chunks())

    # -- validating and storing ------------------------------------------------------------------
    def inspect(self, received: Received, filename: str, expected_subdir: str | None) -> PackageMetadata:
        fn = parse_filename(filename)
        source = received.data if received.data is not None else received.path
        assert source is not None
        info = read_archive(source, fn, self.limits)
        return build_metadata(info, fn, expected_subdir)

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
        record_overrides: dict | None = None,
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
        archive walk and its metadata. Errors are kept in the result, never raised."""
        b = Ingested(item)
        try:
            self._check_sums(item)
            received = item.received
            meta = self.inspect(received, item.filename, item.expected_subdir)
            record = dict(meta.record)
            if item.record_overrides:
                record.update(item.record_overrides)  # e.g. a mirror keeps upstream's patched fields
                check_record(record, source="repodata", filename=item.filename)
            record.update(md5=received.md5, sha256=received.sha256, size=received.size)
            b.meta, b.record = meta, record
        except Exception as exc:  # reported with this file; the rest of a batch goes on
            b.error = exc
        return b

    def stage(self, b: Ingested) -> Ingested:
        """Optionally, between the phases and as soon as a file is checked: write its blob ahead (the slow
        file system part, see ``LocalBlobStore.stage``); :meth:`store` then only commits it. Raises on
        an I/O error (the item is then to be dropped with :meth:`discard`)."""
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
        """Phase two for checked files: refuse other bytes under an existing name (unless ``force``), make
        the blobs durable with one barrier, write the rows in one transaction, then call ``on_change``
        once per touched subdir. Returns ``batch``, each with a ``result`` or an ``error``. Every temp file
        is consumed. An unknown channel raises (nothing lands)."""
        # From relying on a blob (writing it, or finding it present) to committing its row, collection
        # (``check --repair``) waits: it never deletes a blob a row is about to point at.
        live: list[Ingested] = []
        with self.blobs.writing():
            try:
                with self.db.session() as s:
                    channel_id = get_channel(s, channel_name).id
                live = [b for b in batch if b.ok]
                if live:
                    self._precheck_conflicts(channel_id, channel_name, live)  # a 409 must not leave a blob behind
                    live = [b for b in live if b.ok]
                run_all(self.stage, [(b,) for b in live if b.staged is None])
                staged = [b.staged for b in live]
                for b, is_new in zip(live, self.blobs.commit(staged), strict=True):  # type: ignore[arg-type]
                    b.new_blob = is_new
                    b.staged = None
            finally:
                for b in batch:
                    self.discard(b)
            if live:
                self._write(channel_id, channel_name, live, actor)
        self._drop_unused_blobs([b for b in live if b.error is not None and b.new_blob])
        changed = {b.result.subdir for b in batch if b.result is not None and b.result.status != "unchanged"}
        if self.on_change is not None:
            for subdir in sorted(changed):
                self.on_change(channel_id, subdir)
        return batch

    # -- the steps -------------------------------------------------------------------------------
    @staticmethod
    def _check_sums(item: IngestItem) -> None:
        received, fn = item.received, item.filename
        for what, expected, actual in (
            ("size", item.expected_size, received.size),
            ("sha256", item.expected_sha256, received.sha256),
            ("md5", item.expected_md5, received.md5),
        ):
            if expected is not None and expected != actual:
                raise ChecksumMismatch(
                    f"{fn}: {what} {actual} differs from the expected {expected}",
                    filename=fn,
                    expected=expected,
                    actual=actual,
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
        written leaves no blob behind (unless another row uses the same bytes)."""

        def write(session: Session, group: list[Ingested]) -> list[tuple[Outcome, int]]:
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
            outcomes = put_records(session, channel, entries)
            seqs = {}
            for sd in {b.subdir for b in group}:
                state = get_state(session, channel_id, sd)
                seqs[sd] = state.change_seq if state else 0
            return [(o, seqs[b.subdir]) for o, b in zip(outcomes, group, strict=True)]

        try:
            done = self.db.run_write(lambda s: write(s, live))
        except Exception as exc:
            if len(live) == 1:
                self._failed(live[0], exc)
                return
            for b in live:  # one row spoiled the batch: each on its own, so only the culprit fails
                try:
                    ((outcome, seq),) = self.db.run_write(lambda s, b=b: write(s, [b]))  # type: ignore[misc]
                except Exception as exc:
                    self._failed(b, exc)
                else:
                    b.set_result(channel_name, outcome, seq)
            return
        for b, (outcome, seq) in zip(live, done, strict=True):
            b.set_result(channel_name, outcome, seq)

    @staticmethod
    def _failed(b: Ingested, exc: Exception) -> None:
        b.error = exc

    def _drop_unused_blobs(self, failed: list[Ingested]) -> None:
        """Blobs this call wrote for rows that could not be written: removed unless something points at
        them by now (looked at under the collection lock; if writers are busy, left for ``check``)."""
        shas = {b.item.received.sha256 for b in failed}
        if not shas:
            return
        with self.blobs.collecting(wait=False) as locked:
            if not locked:
                return
            with self.db.session() as s:
                used = set(s.scalars(select(Record.sha256).where(Record.sha256.in_(shas))))
            for sha in shas - used:
                self.blobs.delete(sha)
