"""The one upstream client of the mirror domain (httpx, async).

An upstream is an http(s) conda channel (another condavault, anaconda.org, a conda-forge mirror ...) or
a local channel directory (a path or ``file://`` URL). :class:`Upstream` reads a subdir's repodata
(CEP-16 shards when the upstream has a shard index and ``use_shards`` is on, else ``repodata.json.zst``,
then ``repodata.json``) with an ETag cache on disk, and streams package files. Every request is
retried with exponential backoff on 5xx, 429, timeouts and connection errors;
other 4xx answers fail at once. Credentials: ``upstream_token`` is sent as ``Authorization: Bearer``
(put ``/t/<token>/`` in the URL for the path form), ``upstream_username``/``upstream_password`` as HTTP
Basic. ``proxy`` and ``verify_tls`` are passed to httpx. With a ``policy`` (``condavault.outbound``) every
connection -- redirects included -- goes only where it allows. Tests inject an ``httpx.AsyncBaseTransport``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import httpx
import zstandard

from condavault.errors import UpstreamError
from condavault.mirror import shards
from condavault.mirror.config import MirrorConfig
from condavault.outbound import UrlPolicy, async_transport

__all__ = ["Fetched", "Upstream", "redact_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")
CHUNK = 256 * 1024
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TOKEN_RE = re.compile(r"/t/[^/]+/")


def redact_url(url: str) -> str:
    """The URL with a ``/t/<token>/`` path segment and any ``user:password@`` hidden."""
    url = _TOKEN_RE.sub("/t/***/", url)
    parsed = urlparse(url)
    if parsed.password:
        url = url.replace(f"{parsed.username}:{parsed.password}@", f"{parsed.username}:***@", 1)
    return url


@dataclass
class Fetched:
    """One subdir's repodata, where it came from, and whether it changed since the last read.

    ``data`` is parsed on first use: a no-op run (every subdir unchanged) never pays for it.
    """

    subdir: str
    body: bytes
    compressed: bool
    etag: str | None
    changed: bool
    url: str
    _data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = Upstream.decode(self.body, self.compressed)
            self.body = b""
        return self._data


class _Retry(Exception):
    pass


def _local_root(upstream: str) -> Path | None:
    parsed = urlparse(upstream)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(upstream).expanduser()


class Upstream:
    """Use as ``async with Upstream(cfg, cache_dir=...) as up:``."""

    def __init__(
        self,
        cfg: MirrorConfig,
        *,
        cache_dir: Path | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.25,
        policy: UrlPolicy | None = None,
    ) -> None:
        self.cfg = cfg
        self.policy = policy if transport is None else None  # an injected transport is the test's upstream
        self.local = _local_root(cfg.upstream)
        self.base = cfg.upstream.rstrip("/")
        self.cache_dir = cache_dir
        self.retries = max(0, retries)
        self.backoff = backoff
        self.requests = 0  # attempts made, for run statistics
        self.retried = 0
        self.shards_fetched = 0  # shards downloaded (not found in the shard cache)
        self._package_base: dict[str, str] = {}  # subdir -> where its packages live, when a shard index says
        self._client: httpx.AsyncClient | None = None
        if self.local is None:
            headers = {"User-Agent": "condavault-mirror"}
            if cfg.upstream_token:
                headers["Authorization"] = f"Bearer {cfg.upstream_token}"
            auth = (
                httpx.BasicAuth(cfg.upstream_username, cfg.upstream_password or "") if cfg.upstream_username else None
            )
            limits = httpx.Limits(
                max_connections=max(concurrency, 4) + 2, max_keepalive_connections=max(concurrency, 4)
            )
            self._client_kw: dict[str, Any] = {
                "headers": headers,
                "auth": auth,
                "timeout": httpx.Timeout(timeout, connect=min(timeout, 15.0)),
                # one TLS context for every client (building one loads the CA bundle: ~20 ms each)
                "verify": httpx.create_ssl_context(verify=cfg.verify_tls),
                "follow_redirects": True,
            }
            guarded = self._transport(limits)
            self._client = httpx.AsyncClient(
                **self._client_kw,
                proxy=cfg.proxy if transport is None and guarded is None else None,
                transport=transport or guarded,
                limits=limits,
            )
            self._shared_transport = transport is not None
        self._lanes: dict[int, httpx.AsyncClient] = {}

    def _transport(self, limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
        """A transport connecting only where the URL policy allows (None without a policy)."""
        if self.policy is None:
            return None
        return async_transport(self.policy, verify=self._client_kw["verify"], limits=limits, proxy=self.cfg.proxy)

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in [*self._lanes.values(), *([self._client] if self._client is not None else [])]:
            await client.aclose()
        self._lanes.clear()

    def _lane(self, lane: int | None) -> httpx.AsyncClient:
        """The client for one download lane: a connection of its own (httpcore's pool looks at every
        connection it holds on each request, which costs more than the transfer of a small file once
        there are dozens). Without a lane, or with an injected transport, the shared client."""
        assert self._client is not None
        if lane is None or self._shared_transport:
            return self._client
        client = self._lanes.get(lane)
        if client is None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            guarded = self._transport(limits)
            client = self._lanes[lane] = httpx.AsyncClient(
                **self._client_kw,
                proxy=self.cfg.proxy if guarded is None else None,
                transport=guarded,
                limits=limits,
            )
        return client

    # -- URLs ----------------------------------------------------------------------------------------
    def url(self, subdir: str, filename: str) -> str:
        if self.local is not None:
            return (self.local / subdir / filename).as_uri()
        base = self._package_base.get(subdir)
        return f"{base}{filename}" if base else f"{self.base}/{subdir}/{filename}"

    def display_url(self, subdir: str, filename: str) -> str:
        return redact_url(self.url(subdir, filename))

    # -- retries -------------------------------------------------------------------------------------
    async def _with_retries(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.backoff * 2 ** (attempt - 1), 10.0) * (0.5 + random.random())
                await asyncio.sleep(delay)
            self.requests += 1
            try:
                return await fn()
            except _Retry as exc:
                last = exc
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = exc
            log.info("upstream request failed, retrying", extra={"what": what, "attempt": attempt + 1})
        raise UpstreamError(
            f"{what}: upstream failed after {self.retries + 1} attempts: {type(last).__name__}: {last}",
            code="upstream_unavailable",
            url=redact_url(what),
        )

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> None:
        if resp.status_code in RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise UpstreamError(
                f"{redact_url(what)}: upstream answered HTTP {resp.status_code}",
                code="upstream_http_error",
                status=resp.status_code,
                url=redact_url(what),
            )

    # -- repodata ------------------------------------------------------------------------------------
    def _cache_paths(self, subdir: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.base}|{subdir}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}.body", self.cache_dir / f"{key}.meta.json"

    def _read_cache(self, subdir: str) -> tuple[dict[str, Any], bytes] | None:
        paths = self._cache_paths(subdir)
        if paths is None or not paths[0].is_file() or not paths[1].is_file():
            return None
        try:
            return json.loads(paths[1].read_text()), paths[0].read_bytes()
        except (OSError, ValueError):
            return None

    def _write_cache(self, subdir: str, meta: dict[str, Any], body: bytes) -> None:
        paths = self._cache_paths(subdir)
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((paths[0], body), (paths[1], json.dumps(meta).encode())):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)

    @staticmethod
    def decode(body: bytes, compressed: bool) -> dict[str, Any]:
        if compressed:
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        data = json.loads(body)
        if not isinstance(data, dict):
            raise UpstreamError("upstream repodata is not a JSON object", code="invalid_upstream_repodata")
        return data

    async def repodata(self, subdir: str) -> Fetched:
        """The subdir's repodata; ``changed`` is False when the upstream answered 304 (or, for a local
        directory, the file's size and mtime are those of the last read)."""
        if self.local is not None:
            return self._local_repodata(subdir)
        # CEP 16 shards carry no ``signatures`` section: a mirror that checks signatures reads repodata.json
        signed = self.cfg.filters.only_signed or bool(self.cfg.filters.signature_keys)
        if self.cfg.use_shards and not signed:
            sharded = await self._sharded_repodata(subdir)
            if sharded is not None:
                return sharded
        cached = self._read_cache(subdir)
        names = ["repodata.json.zst", "repodata.json"]
        if cached and cached[0].get("file") in names:
            names.remove(cached[0]["file"])
            names.insert(0, cached[0]["file"])
        assert self._client is not None
        client = self._client
        for fname in names:
            url = f"{self.base}/{subdir}/{fname}"
            headers = {}
            if cached and cached[0].get("file") == fname and cached[0].get("etag"):
                headers["If-None-Match"] = cached[0]["etag"]

            async def get(url: str = url, headers: dict[str, str] = headers) -> httpx.Response:
                resp = await client.get(url, headers=headers)
                if resp.status_code in RETRY_STATUS:
                    raise _Retry(f"HTTP {resp.status_code}")
                return resp

            resp = await self._with_retries(url, get)
            zst = fname.endswith(".zst")
            if resp.status_code == 304 and cached is not None:
                return Fetched(subdir, cached[1], zst, cached[0].get("etag"), False, redact_url(url))
            if resp.status_code == 404:
                continue
            self._check(resp, url)
            body = resp.content
            etag = resp.headers.get("etag")
            fetched = Fetched(subdir, body, zst, etag, True, redact_url(url))
            fetched.data  # noqa: B018 - parse now: a broken body must not replace the cache
            self._write_cache(subdir, {"file": fname, "etag": etag}, body)
            fetched.changed = not (cached is not None and cached[1] == body)
            return fetched
        raise UpstreamError(
            f"{redact_url(self.base)}/{subdir}: no repodata.json(.zst) upstream",
            code="upstream_subdir_missing",
            subdir=subdir,
        )

    async def spool_repodata(
        self, subdir: str, dest: Path, known: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Stream the subdir's ``repodata.json.zst`` (else ``repodata.json``) into ``dest``, hashing it.

        ``known`` is the last sync's ``{"file", "etag"}``: that file is asked for first, with
        ``If-None-Match``. Returns None when upstream answers 304, else ``{"file", "etag", "sha256",
        "compressed", "url"}``. Memory stays flat whatever the size (conda-forge scale mirrors)."""
        names = ["repodata.json.zst", "repodata.json"]
        if known and known.get("file") in names:
            names.remove(known["file"])
            names.insert(0, known["file"])
        if self.local is not None:
            for fname in names:
                path = self.local / subdir / fname
                if path.is_file():
                    st = path.stat()
                    etag = f"{st.st_size}-{st.st_mtime_ns}"
                    if known and known.get("file") == fname and known.get("etag") == etag:
                        return None
                    h = hashlib.sha256()
                    with open(path, "rb") as src, open(dest, "wb") as out:
                        while chunk := src.read(CHUNK * 4):
                            h.update(chunk)
                            out.write(chunk)
                    return {
                        "file": fname,
                        "etag": etag,
                        "sha256": h.hexdigest(),
                        "compressed": fname.endswith(".zst"),
                        "url": path.as_uri(),
                    }
            raise UpstreamError(
                f"{self.local / subdir}: no repodata.json in the upstream directory", code="upstream_subdir_missing"
            )
        assert self._client is not None
        client = self._client
        for fname in names:
            url = f"{self.base}/{subdir}/{fname}"
            headers = {}
            if known and known.get("file") == fname and known.get("etag"):
                headers["If-None-Match"] = str(known["etag"])

            async def get(
                url: str = url, headers: dict[str, str] = headers, fname: str = fname
            ) -> dict[str, Any] | int:
                async with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code in (304, 404):
                        return resp.status_code
                    self._check(resp, url)
                    h = hashlib.sha256()
                    with open(dest, "wb") as out:
                        async for chunk in resp.aiter_bytes(CHUNK * 4):
                            h.update(chunk)
                            out.write(chunk)
                    return {
                        "file": fname,
                        "etag": resp.headers.get("etag"),
                        "sha256": h.hexdigest(),
                        "compressed": fname.endswith(".zst"),
                        "url": redact_url(url),
                    }

            got = await self._with_retries(url, get)
            if got == 304:
                return None
            if got == 404:
                continue
            assert isinstance(got, dict)
            return got
        raise UpstreamError(
            f"{redact_url(self.base)}/{subdir}: no repodata.json(.zst) upstream",
            code="upstream_subdir_missing",
            subdir=subdir,
        )

    async def _sharded_repodata(self, subdir: str) -> Fetched | None:
        """The subdir's records from its CEP-16 shards, or None when the upstream has no shard index.

        The index is revalidated with its ETag (304: nothing to read); shards are content-addressed, so
        only those not in the shard cache are fetched (16 at a time), each verified against its hash."""
        assert self._client is not None
        client = self._client
        cached = self._read_cache(subdir)
        if cached is not None and cached[0].get("file") != shards.INDEX:
            cached = None
        url = f"{self.base}/{subdir}/{shards.INDEX}"
        headers = {"If-None-Match": cached[0]["etag"]} if cached and cached[0].get("etag") else {}

        async def get() -> httpx.Response:
            resp = await client.get(url, headers=headers)
            if resp.status_code in RETRY_STATUS:
                raise _Retry(f"HTTP {resp.status_code}")
            return resp

        resp = await self._with_retries(url, get)
        if resp.status_code in (404, 501):  # no shards here: repodata.json(.zst) it is
            return None
        if resp.status_code == 304 and cached is not None:
            if cached[0].get("package_base"):
                self._package_base[subdir] = cached[0]["package_base"]
            return Fetched(subdir, cached[1], False, cached[0].get("etag"), False, redact_url(url))
        self._check(resp, url)
        index = shards.decode_index(resp.content, redact_url(url))
        store = shards.ShardCache(self._shard_dir(subdir))
        limit = asyncio.Semaphore(16)

        async def one(digest: str) -> dict[str, Any]:
            shard_url = index.shard_url(digest)
            body = store.get(digest)
            if body is None:

                async def fetch() -> bytes:
                    r = await client.get(shard_url)
                    self._check(r, shard_url)
                    return r.content

                async with limit:
                    body = await self._with_retries(shard_url, fetch)
                shard = shards.decode_shard(body, digest, redact_url(shard_url))  # verified before it is kept
                store.put(digest, body)
                self.shards_fetched += 1
                return shard
            return shards.decode_shard(body, digest, redact_url(shard_url))

        parsed = await asyncio.gather(*(one(d) for _, d in sorted(index.shards.items())))
        data = shards.assemble(subdir, parsed)
        body = json.dumps(data, sort_keys=True).encode()
        etag = resp.headers.get("etag")
        base = index.package_base()
        if base:
            self._package_base[subdir] = base
        self._write_cache(subdir, {"file": shards.INDEX, "etag": etag, "package_base": base}, body)
        store.keep_only(set(index.shards.values()))
        changed = not (cached is not None and cached[1] == body)
        return Fetched(subdir, body, False, etag, changed, redact_url(url), _data=data)

    def _shard_dir(self, subdir: str) -> Path | None:
        paths = self._cache_paths(subdir)
        return None if paths is None else paths[0].with_suffix(".shards")

    def _local_repodata(self, subdir: str) -> Fetched:
        assert self.local is not None
        for fname in ("repodata.json", "repodata.json.zst"):
            path = self.local / subdir / fname
            if path.is_file():
                st = path.stat()
                etag = f"{st.st_size}-{st.st_mtime_ns}"
                cached = self._read_cache(subdir)
                changed = not (cached and cached[0].get("etag") == etag)
                if changed:
                    self._write_cache(subdir, {"file": fname, "etag": etag}, b"")
                return Fetched(subdir, path.read_bytes(), fname.endswith(".zst"), etag, changed, path.as_uri())
        raise UpstreamError(
            f"{self.local / subdir}: no repodata.json in the upstream directory", code="upstream_subdir_missing"
        )

    # -- files ---------------------------------------------------------------------------------------
    async def download(
        self,
        subdir: str,
        filename: str,
        consume: Callable[[AsyncIterator[bytes]], Awaitable[T]],
        *,
        lane: int | None = None,
    ) -> T:
        """Stream one file into ``consume`` (e.g. ``Ingestor.aspool``); the whole transfer is retried
        on transient errors, so ``consume`` must start afresh each time it is called. Concurrent
        downloaders pass a ``lane`` number each (one connection per lane)."""
        url = self.url(subdir, filename)
        if self.local is not None:
            path = self.local / subdir / filename
            if not path.is_file():
                raise UpstreamError(f"{path}: not found in the upstream directory", code="upstream_http_error")

            async def chunks() -> AsyncIterator[bytes]:
                with open(path, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        yield chunk

            return await consume(chunks())
        client = self._lane(lane)

        async def attempt() -> T:
            async with client.stream("GET", url) as resp:
                self._check(resp, url)
                return await consume(resp.aiter_bytes(CHUNK))

        return await self._with_retries(url, attempt)

    async def fetch_small(self, subdir: str, name: str, limit: int) -> bytes | None:
        """A small file beside the packages (an attestation sidecar), or None when upstream has none (404).
        More than ``limit`` bytes is an error (the body is never read past it)."""
        url = self.url(subdir, name)
        if self.local is not None:
            path = self.local / subdir / name
            if not path.is_file():
                return None
            if path.stat().st_size > limit:
                raise UpstreamError(f"{name}: larger than {limit} bytes", code="upstream_file_too_large")
            return path.read_bytes()
        assert self._client is not None
        client = self._client

        async def attempt() -> bytes | None:
            async with client.stream("GET", url) as resp:
                if resp.status_code == 404:
                    return None
                self._check(resp, url)
                out = bytearray()
                async for chunk in resp.aiter_bytes(CHUNK):
                    out += chunk
                    if len(out) > limit:
                        raise UpstreamError(f"{name}: larger than {limit} bytes", code="upstream_file_too_large")
                return bytes(out)

        return await self._with_retries(url, attempt)
