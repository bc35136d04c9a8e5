"""The blob store: content-addressed, write-once bytes (design.md §4).

Two backends implement :class:`BlobStore`: a local folder (:mod:`condavault.storage.local`) and an
S3-compatible bucket (:mod:`condavault.storage.s3`). Callers get theirs from
:func:`condavault.storage.open_blob_store` and are typed against this protocol only. A caller that needs
a file on disk (reading an archive, copying into a bundle) asks :meth:`BlobStore.materialize`, which is
the blob itself for a local store and a temp copy for a remote one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class BlobStore(Protocol):
    """Blobs are addressed by the sha256 of their bytes and never change once written."""

    kind: str  # "local" or "s3"

    def put_file(self, src: Path, sha256: str) -> None:
        """Move the verified temp file ``src`` into the store (no-op if the blob exists)."""

    def put_bytes(self, data: bytes, sha256: str) -> None:
        """Store ``data`` under ``sha256`` (no-op if it exists)."""

    def put_many(self, items: Iterable[tuple[Path | bytes, str]]) -> list[bool]:
        """Store many blobs (temp files moved in, or bytes) with one durability barrier: each is
        complete and durable under its name when this returns. Returns, per item, whether it was new."""
        ...

    def stage(self, src: Path | bytes, sha256: str) -> Any:
        """First half of ``put_many`` for one blob: its bytes durable, not yet visible under its name."""

    def commit(self, staged: list[Any]) -> list[bool]:
        """Second half: staged blobs get their names, with one durability barrier for all of them."""
        ...

    def discard_staged(self, staged: Iterable[Any]) -> None:
        """Drop staged blobs that will not be committed."""

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path for streaming, or None when the backend is remote."""

    def materialize(self, sha256: str) -> AbstractContextManager[Path]:
        """A path to the blob's bytes on local disk while the context lasts (a temp copy when remote).
        Raises FileNotFoundError when the blob does not exist."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """A binary file object positioned at 0 (streaming: read in chunks). FileNotFoundError if absent."""
        ...

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A file object whose next byte is byte ``start`` of the blob (``end``: the last byte the caller
        reads, inclusive; a remote store fetches only that range). FileNotFoundError if absent."""
        ...

    def size(self, sha256: str) -> int:
        """Size in bytes; FileNotFoundError if absent."""
        ...

    def age(self, sha256: str) -> float | None:
        """Seconds since the blob was last written or relied on; None when it does not exist."""

    def delete(self, sha256: str) -> None: ...

    def iter_hashes(self) -> Iterator[str]:
        """Iterate over every stored sha256."""
        ...

    def writing(self) -> AbstractContextManager[None]:
        """Hold off collection while blobs are written and their rows committed."""
        ...

    def collecting(self, *, wait: bool = True) -> AbstractContextManager[bool]:
        """Exclusive against :meth:`writing` where the backend can lock; yields whether it may collect."""
        ...

    def temp_file(self) -> tuple[int, Path]:
        """A local temp file (fd, path) for spooling bytes that are then ``put_file`` into the store."""
        ...

    def stale_temp_files(self, older_than: float = 3600.0) -> list[Path]:
        """Local temp files a killed process left behind."""
        ...

    def check(self) -> None:
        """Raise :class:`~condavault.errors.SettingsError` when the store cannot be used (start-up)."""

    def presigned_url(self, sha256: str, *, filename: str | None = None) -> str | None:
        """A short-lived URL a client may GET the blob from directly, or None (local stores)."""
