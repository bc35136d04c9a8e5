"""``/api/repo/[t/<token>/]<channel>/...``: what conda clients talk to (conda-protocol.md §5).

Kept off FastAPI's dependency machinery: this is the hot path. Credentials are resolved, the channel
is authorised, the target is looked up (cached), and the bytes stream from the blob store with no
database connection held.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache, partial
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from condavault.auth.deps import aidentify
from condavault.context import Context
from condavault.errors import CondavaultError, NotFound
from condavault.packages.filename import is_package_filename, is_subdir
from condavault.serving import decompressed

INDEX_FILES = {
    "repodata.json",
    "repodata.json.zst",
    "repodata_shards.msgpack.zst",
    "current_repodata.json",
    "current_repodata.json.zst",
    "run_exports.json",
    "run_exports.json.zst",
}
SHARD_RE = re.compile(r"^([0-9a-f]{64})\.msgpack\.zst$")
SIDECAR_RE = re.compile(r"^(.+)\.sigs(?:\.([0-9a-f]{64}))?$")
ADMISSION_SUFFIX = ".admission.json"
IMMUTABLE = "max-age=31536000, immutable"


BIG_CHUNK = 1024 * 1024
BIG_CHUNK_STREAMS = 16  # above this many downloads in flight, chunks go back to 64 KiB
_streaming = 0  # downloads this process is streaming now (one event loop: a plain counter)


class _BlobResponse(FileResponse):
    """A FileResponse reading 1 MiB per thread hop instead of 64 KiB while few downloads run (about 2x
    the MB/s for big packages); under a crowd, 64 KiB again, so buffered chunks stay ~16 MiB at most."""

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        global _streaming
        self.chunk_size = BIG_CHUNK if _streaming < BIG_CHUNK_STREAMS else FileResponse.chunk_size
        _streaming += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            _streaming -= 1


class _NotModified(Response):
    """A 304 sent as two ASGI messages with the headers encoded once (no Starlette header init)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.status_code = 304
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.body = b""
        self.background = None

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 304, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b""})


class _Bytes(Response):
    """A small body sent as two ASGI messages (no thread hop to read a file, no Starlette header init)."""

    def __init__(self, body: bytes, headers: dict[str, str], content_type: str) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers += [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ]

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else self.body})


SMALL_BLOB = 256 * 1024  # shards: kept in memory once read (content-addressed: never stale)
SMALL_CACHE_BYTES = 64 * 1024 * 1024
_small: dict[str, bytes] = {}
_small_bytes = 0


def _read_small(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _remember(sha: str, data: bytes) -> None:
    global _small_bytes
    if _small_bytes + len(data) > SMALL_CACHE_BYTES:
        _small.clear()
        _small_bytes = 0
    _small[sha] = data
    _small_bytes += len(data)


def small_local(blobs: Any, sha: str) -> bytes | None:
    """A small local blob's bytes (a shard), verified and kept in memory: read here, on the event loop
    (a small file from the page cache costs less than a thread hop). None when the store is remote or
    the file is missing, bigger than ``SMALL_BLOB`` or damaged: the normal path reports those."""
    data = _small.get(sha)
    if data is None:
        data = _read_checked(blobs, sha)
        if data is not None:
            _remember(sha, data)
    return data


def _read_checked(blobs: Any, sha: str) -> bytes | None:
    """A small local blob's bytes, its size and sha256 checked; None when the store is remote or the file
    is missing, bigger than ``SMALL_BLOB`` or damaged."""
    path = blobs.local_path(sha)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(SMALL_BLOB + 1)
    except OSError:
        return None
    if len(data) > SMALL_BLOB or hashlib.sha256(data).hexdigest() != sha:
        return None
    return data


PRIME_BYTES = SMALL_CACHE_BYTES // 4  # what a process start reads ahead (``prime_small``)


def prime_small(ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
    """At a process start, on a thread, after the lookups were primed: the bytes of the primed subdirs'
    shards into the cache above (local blobs only, up to ``PRIME_BYTES``), so that a restarted server's
    first solves are answered from memory as a running one's are. Each file is checked as a request
    checks it; the cache itself is changed on the event loop only."""
    budget = PRIME_BYTES
    for target in ctx.lookup.primed_shards():
        if ctx.lookup.closed or budget <= 0:
            return
        if target.size > SMALL_BLOB or target.size > budget or target.sha256 in _small:
            continue
        data = _read_checked(ctx.blobs, target.sha256)
        if data is None:
            continue  # an object store (read on demand), a missing or damaged file (a request reports it)
        budget -= len(data)
        try:
            loop.call_soon_threadsafe(_remember_new, target.sha256, data)
        except RuntimeError:  # the loop closed: the process is stopping
            return


def _remember_new(sha: str, data: bytes) -> None:
    if sha not in _small:
        _remember(sha, data)


async def _small_blob(sha: str, path: os.PathLike[str] | None, load: Callable[[], bytes] | None = None) -> bytes:
    """A small blob's bytes (shards), verified, from memory once read: from ``path``, else ``load()``."""
    data = _small.get(sha)
    if data is None:
        if path is not None:  # a small local file (a shard, <= SMALL_BLOB): read here, a thread hop costs more
            data = _read_small(os.fspath(path))
        else:
            assert load is not None
            data = await anyio.to_thread.run_sync(load)
        if hashlib.sha256(data).hexdigest() != sha:
            raise NotFound("the stored shard is damaged; run `condavault check --repair`", code="blob_missing")
        _remember(sha, data)
    return data


@lru_cache(maxsize=8192)
def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def error_response(exc: CondavaultError) -> Response:
    from condavault.web.errors import json_error

    return json_error(exc)


def _not_modified(request: Request, etag: str, last_modified: float) -> bool:
    return not_modified(
        request.headers.get("if-none-match"), request.headers.get("if-modified-since"), etag, last_modified
    )


def not_modified(inm: str | None, ims: str | None, etag: str, last_modified: float) -> bool:
    """Whether a request with these ``If-None-Match`` / ``If-Modified-Since`` values gets a 304."""
    if inm is not None:
        return inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    if ims:
        try:
            return int(last_modified) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


async def repo_endpoint(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    try:
        return await _serve(ctx, request)
    except CondavaultError as exc:
        return error_response(exc)


def target_key(channel_id: int, rest: list[str]) -> tuple[object, ...] | None:
    """The lookup key of an index file, shard or package path (``rest``: the parts after the channel)."""
    if rest == ["channeldata.json"]:
        return ("index", channel_id, "", "channeldata.json")
    if len(rest) == 2 and is_subdir(rest[0]):
        if rest[1] in INDEX_FILES:
            return ("index", channel_id, rest[0], rest[1])
        if is_package_filename(rest[1]):
            return ("package", channel_id, rest[0], rest[1])
    elif len(rest) == 3 and rest[1] == "shards" and is_subdir(rest[0]) and SHARD_RE.match(rest[2]):
        return ("shard", channel_id, rest[0], rest[2][:64])
    return None


def entity_headers(ctx: Context, channel: Any, target: Any) -> dict[str, str]:
    """ETag, Cache-Control and Last-Modified of an index file, shard or package (200s and 304s)."""
    cache = ("private, " if channel.privacy != "public" else "public, ") + (
        f"max-age={ctx.settings.index_max_age}" if target.kind == "index" else IMMUTABLE
    )
    return {"ETag": f'"{target.sha256}"', "Cache-Control": cache, "Last-Modified": _http_date(target.last_modified)}


def split_path(path: str) -> tuple[str | None, list[str]]:
    parts = [p for p in path.split("/") if p]
    token = None
    if len(parts) >= 2 and parts[0] == "t":
        token, parts = parts[1], parts[2:]
    return token, parts


async def _serve(ctx: Context, request: Request) -> Response:
    token, parts = split_path(request.path_params["path"])
    if not parts:
        raise NotFound("no channel in the URL", code="channel_not_found")
    identity = await aidentify(request, token)  # cached: no database; else on a worker thread
    channel = await ctx.channels.afor_read(identity, parts[0])
    rest = parts[1:]
    key = target_key(channel.id, rest)
    if key is None:
        if len(rest) == 2 and is_subdir(rest[0]) and (extra := beside_file(rest[1])) is not None:
            return await _serve_beside(ctx, request, channel, rest[0], *extra)
        raise NotFound(f"no such file: {'/'.join(rest) or '(channel root)'}", code="file_not_found")
    hit, target = ctx.lookup.cached(key)
    if not hit:
        target = await ctx.lookup.aload(key)
    if target is None:
        raise NotFound(f"{'/'.join(rest)} not found in channel {channel.name!r}", code="file_not_found")
    if key[0] == "index" and key[3] == "repodata_shards.msgpack.zst":
        ctx.lookup.prime_soon(channel.id, rest[0])  # its shards come next
    if target.kind == "package" and not target.has_blob:
        target = await ctx.fetch_missing(channel, rest[0], target)
    headers = entity_headers(ctx, channel, target)
    if _not_modified(request, headers["ETag"], target.last_modified):
        return _NotModified(headers)
    if target.source is not None:  # a plain JSON index file: its .zst blob, decompressed as it is sent
        return await decompressed.respond(ctx.blobs, request, target, headers)
    path = ctx.blobs.local_path(target.sha256)
    if target.kind == "shard" and target.size <= SMALL_BLOB and not ctx.settings.x_accel_redirect_prefix:
        hot = _small.get(target.sha256)
        if hot is not None:
            return _Bytes(hot, headers, target.content_type)
    if path is None:  # an object store: a presigned redirect, or streamed through (serving.remote)
        from condavault.serving import remote

        if target.kind == "package":
            ctx.on_download(request, identity, channel, rest[0], target)
        if target.kind == "shard" and 0 < target.size <= SMALL_BLOB:
            data = await _small_blob(target.sha256, None, partial(remote.read_all, ctx.blobs, target.sha256))
            return _Bytes(data, headers, target.content_type)
        return await remote.respond(ctx, request, target, headers, rest[-1])
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(
            f"{'/'.join(rest)} is indexed but its bytes are missing; run `condavault check --repair`",
            code="blob_missing",
        )
    if target.kind == "package":
        ctx.on_download(request, identity, channel, rest[0], target)
    prefix = ctx.settings.x_accel_redirect_prefix
    if prefix:  # nginx sends the file (sendfile), with our headers; the path names only the blob
        sha = target.sha256
        headers["X-Accel-Redirect"] = f"{prefix.rstrip('/')}/{sha[:2]}/{sha[2:4]}/{sha}"
        return Response(status_code=200, headers=headers, media_type=target.content_type)
    if target.kind == "shard" and st.st_size <= SMALL_BLOB:
        return _Bytes(await _small_blob(target.sha256, path), headers, target.content_type)
    return _BlobResponse(path, headers=headers, media_type=target.content_type, stat_result=st)


def beside_file(name: str) -> tuple[str, str, str | None] | None:
    """What a name beside a package file asks for: ``(kind, filename, sha256)`` with kind ``sidecar``
    (``<fn>.sigs``, ``<fn>.sigs.<sha256>``, CEP 50) or ``admission`` (``<fn>.admission.json``); else None.
    Package filenames end in ``.conda``/``.tar.bz2``, so these never collide with a package URL."""
    m = SIDECAR_RE.match(name)
    if m and is_package_filename(m.group(1)):
        return "sidecar", m.group(1), m.group(2)
    if name.endswith(ADMISSION_SUFFIX) and is_package_filename(name[: -len(ADMISSION_SUFFIX)]):
        return "admission", name[: -len(ADMISSION_SUFFIX)], None
    return None


async def _serve_beside(
    ctx: Context, request: Request, channel: Any, subdir: str, kind: str, filename: str, digest: str | None
) -> Response:
    """A CEP 50 sidecar (stored bytes, unchanged) or an admission statement (signed on request)."""
    cache = "private, " if channel.privacy != "public" else "public, "
    what = f"{subdir}/{filename}"
    if kind == "admission":
        from condavault.signing.service import admission_bytes

        hit, target = ctx.lookup.cached(("package", channel.id, subdir, filename))
        if not hit:
            target = await ctx.lookup.aload(("package", channel.id, subdir, filename))
        if target is None or not target.sha256:
            raise NotFound(f"{what} not found in channel {channel.name!r}", code="file_not_found")
        if not target.has_blob:
            raise NotFound(f"{what} has not been admitted yet (its bytes were never fetched)", code="not_admitted")
        body = admission_bytes(ctx, channel.name, subdir, filename, target.sha256, target.last_modified)
        return Response(body, media_type="application/json", headers={"Cache-Control": cache + "no-cache"})
    key = ("sidecar", channel.id, subdir, filename)
    hit, target = ctx.lookup.cached(key)
    if not hit:
        target = await ctx.lookup.aload(key)
    if target is None or (digest is not None and digest != target.sha256):
        raise NotFound(
            f"no attestation sidecar for {what}" + (f" with sha256 {digest}" if digest else ""), code="file_not_found"
        )
    etag = f'"{target.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache + (IMMUTABLE if digest else "no-cache"),
        "Last-Modified": _http_date(target.last_modified),
    }
    if _not_modified(request, etag, target.last_modified):
        return Response(status_code=304, headers=headers)
    path = ctx.blobs.local_path(target.sha256)
    if path is None:
        from condavault.serving import remote

        return await remote.respond(ctx, request, target, headers, filename + ".sigs", redirect=False)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"the sidecar of {what} is missing from the blob store", code="blob_missing") from None
    return FileResponse(path, headers=headers, media_type="application/json", stat_result=st)
