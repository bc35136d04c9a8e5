"""The blob store: content-addressed, write-once bytes (design.md §4)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol


class BlobStore(Protocol):
    """Blobs are addressed by the sha256 of their bytes and never change once written."""

    def put_file(self, src: Path, sha256: str) -> None:
        """Move the verified temp file ``src`` into the store (no-op if the blob exists)."""

    def put_bytes(self, data: bytes, sha256: str) -> None:
        """Store ``data`` under ``sha256`` (no-op if it exists)."""

    def put_many(self, items: Iterable[tuple[Path | bytes, str]]) -> list[bool]:
        """Store many blobs (temp files moved in, or bytes) with one durability barrier: each is
        complete and durable under its name when this returns. Returns, per item, whether it was new."""

    def stage(self, src: Path | bytes, sha256: str) -> object:
        """First half of ``put_many`` for one blob: its bytes durable, not yet visible under its name."""

    def commit(self, staged: list[Any]) -> list[bool]:
        """Second half: staged blobs get their names, with one durability barrier for all of them."""

    def discard_staged(self, staged: Iterable[Any]) -> None:
        """Drop staged blobs that will not be committed."""

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path | None:
        """A filesystem path for streaming, or None when the backend is remote."""

    def open(self, sha256: str) -> object:
        """A binary file object positioned at 0."""

    def size(self, sha256: str) -> int: ...

    def delete(self, sha256: str) -> None: ...

    def iter_hashes(self) -> object:
        """Iterate over every stored sha256."""
