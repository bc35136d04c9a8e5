"""The one path every package takes into condavault (design.md §1.1).

stream to a temp file while hashing → validate the archive and read ``info/`` → store the blob under
its sha256 → insert the record row (and mark the subdir dirty) in one transaction. Any failure before
the row insert leaves nothing behind but the temp file, which is removed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.channels.records import Outcome, find_record, put_record
from condavault.channels.services import get_channel
from condavault.config import Settings
from condavault.db.session import Database
from condavault.errors import ChecksumMismatch, Conflict, PayloadTooLarge
from condavault.indexing.dirty import get_state
from condavault.packages.archive import Limits, read_archive
from condavault.packages.filename import parse_filename
from condavault.packages.metadata import PackageMetadata, build_metadata
from condavault.storage.local import LocalBlobStore

CHUNK = 1024 * 1024


@dataclass
class Received:
    path: Path
    size: int
    md5: str
    sha256: str


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
        info = read_archive(received.path, fn, self.limits)
        return build_metadata(info, fn, expected_subdir)

    def ingest(
        self,
        channel_name: str,
        received: Received,
        filename: str,
        *,
        expected_subdir: str | None = None,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        force: bool = False,
        actor: str | None = None,
        record_overrides: dict | None = None,
        source_url: str | None = None,
    ) -> IngestResult:
        """Validate and store a spooled upload. The temp file is consumed in every case."""
        try:
            if expected_size is not None and expected_size != received.size:
                raise ChecksumMismatch(
                    f"{filename}: size {received.size} differs from the expected {expected_size}",
                    filename=filename,
                    expected=expected_size,
                    actual=received.size,
                )
            if expected_sha256 is not None and expected_sha256 != received.sha256:
                raise ChecksumMismatch(
                    f"{filename}: sha256 {received.sha256} differs from the expected {expected_sha256}",
                    filename=filename,
                    expected=expected_sha256,
                    actual=received.sha256,
                )
            with self.db.session() as s:  # fail fast on an unknown channel before the archive walk
                get_channel(s, channel_name)
            meta = self.inspect(received, filename, expected_subdir)
            record = dict(meta.record)
            if record_overrides:
                record.update(record_overrides)  # e.g. a mirror keeps upstream's patched fields
            record.update(md5=received.md5, sha256=received.sha256, size=received.size)
            with self.db.session() as s:  # a 409 must not leave a blob behind
                existing = find_record(s, get_channel(s, channel_name), meta.subdir, filename)
                if existing is not None and existing.sha256 != received.sha256 and not force:
                    raise Conflict(
                        f"{meta.subdir}/{filename} already exists in channel {channel_name!r} with different content",
                        code="filename_conflict",
                        channel=channel_name,
                        filename=filename,
                        existing_sha256=existing.sha256,
                    )
            had_blob = self.blobs.exists(received.sha256)
            self.blobs.put_file(received.path, received.sha256)
        finally:
            received.path.unlink(missing_ok=True)

        def write(session: Session) -> tuple[Outcome, int]:
            channel = get_channel(session, channel_name)
            outcome = put_record(
                session,
                channel,
                meta.subdir,
                filename,
                record,
                about=meta.about,
                run_exports=meta.run_exports,
                paths_summary=meta.paths_summary,
                force=force,
                uploaded_by=actor,
                source_url=source_url,
            )
            state = get_state(session, channel.id, meta.subdir)
            return outcome, state.change_seq if state else 0

        try:
            outcome, seq = self.db.run_write(write)
        except BaseException:
            if not had_blob and not self._referenced(received.sha256):
                self.blobs.delete(received.sha256)
            raise
        if self.on_change is not None and outcome.status != "unchanged":
            self.on_change(outcome.record.channel_id, meta.subdir)
        return IngestResult(
            channel=channel_name,
            subdir=meta.subdir,
            filename=filename,
            sha256=received.sha256,
            md5=received.md5,
            size=received.size,
            status=outcome.status,
            change_seq=seq,
            security=meta.security,
        )

    def _referenced(self, sha256: str) -> bool:
        with self.db.session() as s:
            return s.scalar(select(Record.id).where(Record.sha256 == sha256).limit(1)) is not None
