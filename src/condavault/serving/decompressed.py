"""A subdir's plain JSON index files (``repodata.json``, ``current_repodata.json``, ``run_exports.json``),
served decompressed from their ``.zst`` blob as they are sent.

A publish writes only the ``.zst`` files: writing the JSON beside them (103 MB at 300 k records) was most of
a publish's time (docs/performance.md, "Issue 15: plain JSON index files served from their .zst"). The
pointer (``published_files``) keeps the JSON's size and an ETag derived from the ``.zst`` blob's sha256
(:func:`condavault.indexing.buckets.plain_id`), so ``Content-Length``, 304s and HEAD need no read. Every
modern client reads the ``.zst`` file or shards; a plain GET costs a decompression (~1 GB/s, the
interpreter lock released) on a worker thread, a chunk at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
import zstandard
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from condavault.errors import NotFound, RateLimited
from condavault.serving.lookup import Target
from condavault.serving.remote import chunks
from condavault.storage.interfaces import BlobStore

CHUNK = 1024 * 1024
SMALL_CHUNK = 64 * 1024  # above CROWD streams at once: each holds ~0.4-1 MB (window, buffers) plus a chunk
CROWD = 16
MAX_STREAMS = 256  # beyond this many at once a plain GET gets 429 (bounded memory); .zst files and shards do not
_streams = 0  # plain JSON bodies this process is sending now (one event loop: a plain counter)


def open_json(blobs: BlobStore, source: str) -> BinaryIO:
    """A reader of the JSON file that the zstd blob ``source`` compresses (FileNotFoundError: no blob)."""
    fh = blobs.open(source)
    try:
        return zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)  # type: ignore[return-value]
    except BaseException:
        fh.close()
        raise


def copy_json(blobs: BlobStore, source: str, dest: Path) -> str:
    """Write the JSON file that the zstd blob ``source`` compresses to ``dest``; returns its sha256 (hashed
    as it is written)."""
    digest = hashlib.sha256()
    with open_json(blobs, source) as src, open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


async def respond(blobs: BlobStore, request: Request, target: Target, headers: dict[str, str]) -> Response:
    assert target.source is not None
    out = {**headers, "Content-Length": str(target.size)}
    if request.method == "HEAD":
        return Response(status_code=200, headers=out, media_type=target.content_type)
    if _streams >= MAX_STREAMS:
        raise RateLimited(
            f"{MAX_STREAMS} plain JSON index downloads are running; retry, or fetch the .zst file",
            code="too_many_downloads",
            retry_after=1,
        )
    try:
        reader = await anyio.to_thread.run_sync(open_json, blobs, target.source)
    except FileNotFoundError:
        raise NotFound(
            "the index file is published but its bytes are missing; run `condavault check --repair`",
            code="blob_missing",
        ) from None
    return StreamingResponse(_counted(reader, target.size), headers=out, media_type=target.content_type)


async def _counted(reader: BinaryIO, size: int) -> AsyncIterator[bytes]:
    global _streams
    _streams += 1
    try:
        async for chunk in chunks(reader, size, CHUNK if _streams <= CROWD else SMALL_CHUNK):
            yield chunk
    finally:
        _streams -= 1
