"""The upstream client with an injected ``httpx.MockTransport``: retries, ETag cache, credentials."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from condavault.errors import UpstreamError
from condavault.mirror.config import MirrorConfig
from condavault.mirror.upstream import Upstream, redact_url

REPODATA = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {"a-1-0.conda": {"name": "a"}}}


def cfg(**kw: object) -> MirrorConfig:
    data: dict[str, object] = {
        "name": "m",
        "upstream": "https://up.example/chan",
        "channel": "c",
        "subdirs": ["noarch"],
    }
    return MirrorConfig.model_validate({**data, **kw})


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def test_retries_5xx_and_timeouts_then_succeeds() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        n = len(calls)
        if n == 1:
            return httpx.Response(503)
        if n == 2:
            raise httpx.ReadTimeout("slow", request=request)
        if n == 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"bytes!")

    async def go() -> bytes:
        async with Upstream(cfg(), transport=httpx.MockTransport(handler), backoff=0.001) as up:
            return await up.download("noarch", "a-1-0.conda", collect)

    assert asyncio.run(go()) == b"bytes!"
    assert calls == ["/chan/noarch/a-1-0.conda"] * 4


def test_gives_up_after_retries_and_does_not_retry_4xx() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502 if "a-1" in request.url.path else 403)

    async def go(fn: str) -> bytes:
        async with Upstream(cfg(), transport=httpx.MockTransport(handler), retries=2, backoff=0.001) as up:
            return await up.download("noarch", fn, collect)

    with pytest.raises(UpstreamError) as exc:
        asyncio.run(go("a-1-0.conda"))
    assert exc.value.code == "upstream_unavailable" and len(calls) == 3
    calls.clear()
    with pytest.raises(UpstreamError) as exc:
        asyncio.run(go("b-1-0.conda"))
    assert exc.value.code == "upstream_http_error" and exc.value.details["status"] == 403 and len(calls) == 1


def test_repodata_zst_then_json_with_etag_cache(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []
    body = json.dumps(REPODATA).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("if-none-match")))
        if request.url.path.endswith("repodata.json.zst"):
            if request.headers.get("if-none-match") == '"v1"':
                return httpx.Response(304)
            return httpx.Response(200, content=zstandard.compress(body), headers={"ETag": '"v1"'})
        return httpx.Response(404)

    async def go() -> tuple[bool, bool]:
        async with Upstream(cfg(), cache_dir=tmp_path, transport=httpx.MockTransport(handler)) as up:
            first = await up.repodata("noarch")
            second = await up.repodata("noarch")
            assert first.data == second.data == REPODATA
            return first.changed, second.changed

    assert asyncio.run(go()) == (True, False)
    probe = ("/chan/noarch/repodata_shards.msgpack.zst", None)  # no shards upstream: 404, then repodata
    assert seen == [
        probe,
        ("/chan/noarch/repodata.json.zst", None),
        probe,
        ("/chan/noarch/repodata.json.zst", '"v1"'),
    ]


def _shard(records: dict[str, dict]) -> bytes:
    packed = {
        "packages": {},
        "packages.conda": {
            fn: {**r, "sha256": bytes.fromhex(r["sha256"]), "md5": bytes.fromhex(r["md5"]), "run_exports": {}}
            for fn, r in records.items()
        },
        "removed": [],
    }
    return zstandard.compress(msgpack.packb(packed, use_bin_type=True))


def test_sharded_upstream_fetches_only_new_shards_and_verifies_them(tmp_path: Path) -> None:
    def rec(name: str, version: str) -> dict:
        return {"name": name, "version": version, "build": "0", "build_number": 0, "depends": [],
                "sha256": hashlib.sha256(f"{name}{version}".encode()).hexdigest(), "md5": "00" * 16}  # fmt: skip

    shards = {"a": _shard({"a-1-0.conda": rec("a", "1")}), "b": _shard({"b-1-0.conda": rec("b", "1")})}
    state = {"etag": '"i1"', "tamper": False}
    seen: list[str] = []

    def index() -> bytes:
        body = {
            "info": {"subdir": "noarch", "base_url": "https://cdn.example/files/", "shards_base_url": "./shards/"},
            "shards": {n: hashlib.sha256(b).digest() for n, b in shards.items()},
        }
        return zstandard.compress(msgpack.packb(body, use_bin_type=True))

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.append(path)
        if path == "/chan/noarch/repodata_shards.msgpack.zst":
            if request.headers.get("if-none-match") == state["etag"]:
                return httpx.Response(304)
            return httpx.Response(200, content=index(), headers={"ETag": state["etag"]})
        if path.startswith("/chan/noarch/shards/"):
            digest = path.rsplit("/", 1)[1].split(".")[0]
            body = next(b for b in shards.values() if hashlib.sha256(b).hexdigest() == digest)
            return httpx.Response(200, content=body + (b"x" if state["tamper"] else b""))
        return httpx.Response(404)

    async def go() -> None:
        async with Upstream(cfg(), cache_dir=tmp_path, transport=httpx.MockTransport(handler)) as up:
            first = await up.repodata("noarch")
            assert first.changed and set(first.data["packages.conda"]) == {"a-1-0.conda", "b-1-0.conda"}
            a = first.data["packages.conda"]["a-1-0.conda"]
            assert a["sha256"] == rec("a", "1")["sha256"] and "run_exports" not in a  # hex again, CEP 21 left out
            assert up.shards_fetched == 2 and not any("repodata.json" in p for p in seen)
            assert up.url("noarch", "a-1-0.conda") == "https://cdn.example/files/a-1-0.conda"  # the index's base_url
            second = await up.repodata("noarch")  # 304 on the index: no shard read
            assert not second.changed and second.data == first.data and up.shards_fetched == 2
            shards["b"] = _shard({"b-1-0.conda": rec("b", "1"), "b-2-0.conda": rec("b", "2")})
            state["etag"] = '"i2"'
            third = await up.repodata("noarch")  # only b's new shard is fetched
            assert third.changed and "b-2-0.conda" in third.data["packages.conda"] and up.shards_fetched == 3
            shards["a"] = _shard({"a-1-0.conda": rec("a", "1"), "a-2-0.conda": rec("a", "2")})
            state.update(etag='"i3"', tamper=True)
            with pytest.raises(UpstreamError) as err:  # a shard that does not hash to its index entry
                await up.repodata("noarch")
            assert err.value.code == "upstream_checksum_mismatch"

    asyncio.run(go())


def test_json_fallback_and_missing_subdir() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/chan/noarch/repodata.json":
            return httpx.Response(200, json=REPODATA)
        return httpx.Response(404)

    async def go(subdir: str) -> dict[str, object]:
        async with Upstream(cfg(subdirs=["noarch", "linux-64"]), transport=httpx.MockTransport(handler)) as up:
            return (await up.repodata(subdir)).data

    assert asyncio.run(go("noarch")) == REPODATA
    with pytest.raises(UpstreamError) as exc:
        asyncio.run(go("linux-64"))
    assert exc.value.code == "upstream_subdir_missing"


def test_credentials_token_and_basic() -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return httpx.Response(200, content=b"x")

    async def go(c: MirrorConfig) -> None:
        async with Upstream(c, transport=httpx.MockTransport(handler)) as up:
            await up.download("noarch", "a-1-0.conda", collect)

    asyncio.run(go(cfg(upstream_token="tok-1")))
    asyncio.run(go(cfg(upstream_username="u", upstream_password="p")))
    assert headers == ["Bearer tok-1", "Basic dTpw"]


def test_redaction() -> None:
    assert redact_url("https://h/api/repo/t/secret-tok/chan") == "https://h/api/repo/t/***/chan"
    assert redact_url("https://user:pw@h/chan") == "https://user:***@h/chan"


def test_local_directory_upstream(tmp_path: Path) -> None:
    (tmp_path / "noarch").mkdir()
    (tmp_path / "noarch" / "repodata.json").write_text(json.dumps(REPODATA))
    (tmp_path / "noarch" / "a-1-0.conda").write_bytes(b"local bytes")

    async def go(upstream: str) -> tuple[dict[str, object], bytes, bool]:
        c = MirrorConfig(name="m", upstream=upstream, channel="c", subdirs=["noarch"])
        async with Upstream(c, cache_dir=tmp_path / "cache") as up:
            got = await up.repodata("noarch")
            again = await up.repodata("noarch")
            return got.data, await up.download("noarch", "a-1-0.conda", collect), again.changed

    for upstream in (str(tmp_path), tmp_path.as_uri()):
        data, blob, changed = asyncio.run(go(upstream))
        assert data == REPODATA and blob == b"local bytes" and changed is False
