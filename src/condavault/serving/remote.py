"""Serving blobs of a remote store (S3): packages as a short-lived presigned redirect
(``s3_serve_mode = "redirect"``) or streamed through this process, index files and sidecars streamed.

The caller (:mod:`condavault.serving.repo`) has authorised the request and answered 304s already; the
ETag and Last-Modified come from the database, never from the store. HEAD never reads the object;
single byte ranges (``Range: bytes=a-b``, ``a-``, ``-n``) are answered 206, others 416.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from condavault.context import Context
from condavault.errors import NotFound
from condavault.serving.lookup import Target
from condavault.storage.interfaces import BlobStore

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def read_all(blobs: BlobStore, sha256: str) -> bytes:
    """A small blob's bytes, checked against its name."""
    try:
        with blobs.open(sha256) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise NotFound("the stored file is missing from the blob store", code="blob_missing") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise NotFound("the stored file is damaged; run `condavault check --repair`", code="blob_missing")
    return data


def _byte_range(header: str | None, total: int) -> tuple[int, int] | bool | None:
    """(first, last) of a satisfiable single range; None: no (usable) Range header; False: unsatisfiable."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: the whole file (RFC 9110 allows ignoring Range)
    if not m.group(1):  # the last n bytes
        n = int(m.group(2))
        if n == 0 or total == 0:
            return False
        return max(0, total - n), total - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else total - 1
    if first >= total or last < first:
        return False
    return first, min(last, total - 1)


async def chunks(fh: BinaryIO, length: int, size: int = CHUNK) -> AsyncIterator[bytes]:
    """``length`` bytes of ``fh``, read ``size`` at a time on a worker thread; ``fh`` closed at the end."""
    try:
        left = length
        while left > 0:
            chunk = await anyio.to_thread.run_sync(fh.read, min(size, left))
            if not chunk:
                break  # the object is shorter than the database says: the client sees a short body
            left -= len(chunk)
            yield chunk
    finally:
        await anyio.to_thread.run_sync(fh.close)


async def respond(
    ctx: Context, request: Request, target: Target, headers: dict[str, str], filename: str, *, redirect: bool = True
) -> Response:
    blobs = ctx.blobs
    if redirect and target.kind == "package" and ctx.settings.s3_serve_mode == "redirect":
        url = await anyio.to_thread.run_sync(lambda: blobs.presigned_url(target.sha256, filename=filename))
        if url is not None:
            # the URL expires: neither the client nor a shared cache may keep this answer
            return Response(
                status_code=307,
                headers={
                    "Location": url,
                    "Cache-Control": "private, no-store",
                    "ETag": headers["ETag"],
                },
            )
    total = target.size
    if total <= 0:
        try:
            total = await anyio.to_thread.run_sync(blobs.size, target.sha256)
        except FileNotFoundError:
            raise NotFound(f"{filename} is indexed but its bytes are missing", code="blob_missing") from None
    out = {**headers, "Accept-Ranges": "bytes"}
    status, first, last = 200, 0, total - 1
    if target.kind == "package" or target.size > CHUNK:
        rng = _byte_range(request.headers.get("range"), total)
        if rng is False:
            return Response(status_code=416, headers={**out, "Content-Range": f"bytes */{total}"})
        if isinstance(rng, tuple):
            status, (first, last) = 206, rng
            out["Content-Range"] = f"bytes {first}-{last}/{total}"
    length = last - first + 1 if total else 0
    out["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=out, media_type=target.content_type)
    try:
        fh = await anyio.to_thread.run_sync(
            lambda: blobs.open_range(target.sha256, first, last if status == 206 else None)
        )
    except FileNotFoundError:
        raise NotFound(f"{filename} is indexed but its bytes are missing", code="blob_missing") from None
    return StreamingResponse(chunks(fh, length), status_code=status, headers=out, media_type=target.content_type)
