"""Blob stores: :func:`open_blob_store` builds the one the settings name (every caller uses it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from condavault.errors import SettingsError
from condavault.storage.interfaces import BlobStore

if TYPE_CHECKING:
    from condavault.config import Settings

__all__ = ["BlobStore", "open_blob_store"]


def open_blob_store(settings: Settings, *, check: bool = False) -> BlobStore:
    """The blob store of ``settings.blob_store``; ``check`` also verifies it is reachable and usable
    (start-up: an unreachable endpoint or a missing bucket is a :class:`SettingsError`, one line)."""
    store: BlobStore
    if settings.blob_store == "local":
        from condavault.storage.local import LocalBlobStore

        store = LocalBlobStore(settings.blobs_path)
    elif settings.blob_store == "s3":
        from condavault.storage.s3 import S3BlobStore

        store = S3BlobStore.from_settings(settings)
    else:  # pragma: no cover - Settings validates the name
        raise SettingsError(f"unknown blob_store {settings.blob_store!r} (local or s3)")
    if check:
        store.check()
    return store
