"""Receiving a package's bytes while hashing them, and reading what they are: no database, no web.

:class:`Spool` writes incoming chunks to a temp file while computing md5 and sha256 and enforcing the
size limit; :func:`aspool` does that for an async stream with the hashing and writing on a worker
thread (the event loop only collects chunks). :func:`inspect` validates the archive and returns its
metadata (:mod:`condavault.packages.archive`, :mod:`condavault.packages.metadata`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from condavault.errors import ChecksumMismatch, PayloadTooLarge
from condavault.packages.archive import Limits, Visit, read_archive
from condavault.packages.filename import parse_filename
from condavault.packages.metadata import PackageMetadata, build_metadata

CHUNK = 1024 * 1024
TempFactory = Callable[[], tuple[int, Path]]  # (open fd, path) of a new temp file


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


class Spool:
    """A temp file being written while hashed; ``finish`` gives the :class:`Received`."""

    def __init__(self, temp_file: TempFactory, max_bytes: int) -> None:
        fd, self.path = temp_file()
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


def spool(temp_file: TempFactory, max_bytes: int, chunks: Iterable[bytes]) -> Received:
    sp = Spool(temp_file, max_bytes)
    try:
        for chunk in chunks:
            sp.write(chunk)
    except BaseException:
        sp.abort()
        raise
    return sp.finish()


def spool_file(temp_file: TempFactory, max_bytes: int, path: Path) -> Received:
    def chunks() -> Iterable[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return spool(temp_file, max_bytes, chunks())


async def feed_off_loop(chunks: AsyncIterator[bytes], feed: Callable[[bytes], None], max_bytes: int) -> None:
    """Hand an async stream to ``feed`` on a worker thread, about one MiB at a time: the event loop only
    gathers chunks. A stream past ``max_bytes`` is refused as it arrives (before it is fed on)."""
    pending: list[bytes] = []
    size = total = 0
    async for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes", limit=max_bytes)
        if size >= CHUNK:
            buf, pending, size = b"".join(pending), [], 0
            await anyio.to_thread.run_sync(feed, buf)
    if pending:
        await anyio.to_thread.run_sync(feed, b"".join(pending))


async def aspool(temp_file: TempFactory, max_bytes: int, chunks: AsyncIterator[bytes]) -> Received:
    """:func:`spool` for an async stream: creating the file, hashing and writing run on a worker thread
    (:func:`feed_off_loop`)."""
    sp = await anyio.to_thread.run_sync(Spool, temp_file, max_bytes)
    try:
        await feed_off_loop(chunks, sp.write, max_bytes)
        return await anyio.to_thread.run_sync(sp.finish)
    except BaseException:  # also a cancellation (a client gone or refused): shielded, or abort never runs
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sp.abort)
        raise


def check_sums(
    received: Received,
    filename: str,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    expected_md5: str | None = None,
) -> None:
    """Raise :class:`ChecksumMismatch` unless size and hashes are the expected ones (None: not checked)."""
    for what, expected, actual in (
        ("size", expected_size, received.size),
        ("sha256", expected_sha256, received.sha256),
        ("md5", expected_md5, received.md5),
    ):
        if expected is not None and expected != actual:
            raise ChecksumMismatch(
                f"{filename}: {what} {actual} differs from the expected {expected}",
                filename=filename,
                expected=expected,
                actual=actual,
            )


def inspect(
    received: Received, filename: str, limits: Limits, expected_subdir: str | None = None, visit: Visit | None = None
) -> PackageMetadata:
    """Validate the archive (name, structure, member paths, limits) and read its metadata (``visit``: a
    visitor of every member, in the same pass)."""
    fn = parse_filename(filename)
    source = received.data if received.data is not None else received.path
    assert source is not None
    return build_metadata(read_archive(source, fn, limits, visit), fn, expected_subdir)
