"""Issue 15: the index composed from buckets on disk equals a from-scratch build, run after run.

Buckets are made tiny here (a few hundred bytes) so that uploads, removals and patches split, rewrite
and empty them; after each step the served ``repodata.json``, its ``.zst``, ``run_exports.json`` and
``current_repodata.json`` (kept up to date name by name, back-filled older records included) must be exactly
what the pure builders make of every record read anew (but for the spaces in front of each piece that the
spliced ``.zst`` frames need), each ``.zst`` file must hold exactly the served JSON, and py-rattler must
solve through the served ``repodata.json.zst``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import rattler
import zstandard
from rattler import Channel, ChannelConfig, Gateway, SourceConfig
from sqlalchemy import select

from condavault.channels.models import Channel as ChannelRow
from condavault.channels.models import Record
from condavault.indexing import buckets, builder, derived, reading, zstd_frames
from tests.support.packages import make_conda
from tests.support.server import Server, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def tiny_buckets(tmp_path: Path, db_backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(buckets, "TARGET", 600)
    srv, pg = start_server(tmp_path / "srv", db_backend)
    try:
        yield srv
    finally:
        stop_server(srv, pg)


def _from_scratch(srv: Server, channel: str, subdir: str) -> tuple[bytes, bytes, bytes]:
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(ChannelRow.id).where(ChannelRow.name == channel))
        assert cid is not None
        segments = {n: builder.build_segment(rows) for n, rows in reading.each_name(s, cid, subdir)}
        live = (Record.channel_id == cid, Record.subdir == subdir, Record.removed.is_(False))
        cols = (Record.filename, Record.name, Record.version, Record.build, Record.build_number)
        lights = [derived.Light(*r) for r in s.execute(select(*cols).where(*live))]
        fragments = {fn: frag for fn, frag in s.execute(select(Record.filename, Record.fragment).where(*live))}
    cur = derived.current_repodata(subdir, lights, lambda fns: {fn: json.loads(fragments[fn]) for fn in fns})
    return (
        builder.compose_repodata(subdir, segments),
        builder.compose_run_exports(subdir, segments),
        derived.encode_current(cur),
    )


def _unspaced(data: bytes) -> bytes:
    """The served file without the spaces in front of each compressed piece (zstd_frames.RESET_OUT): the
    bytes the pure builders make."""
    return re.sub(rb"(?<=[{,])" + re.escape(zstd_frames.RESET_OUT) + rb"(?=[\"}])", b"", data)


def _plain(srv: Server, c: httpx.Client, url: str) -> bytes:
    """A plain JSON index file: decompressed from its .zst blob as it is sent (no blob of its own), its ETag
    named after that blob's bytes, its Content-Length the JSON's; a HEAD that says the same, and 304s."""
    r = c.get(url)
    assert r.status_code == 200, r.text
    zst = c.get(url + ".zst").content
    assert zstandard.ZstdDecompressor().decompress(zst) == r.content
    etag = buckets.plain_id(hashlib.sha256(zst).hexdigest())
    assert r.headers["etag"] == f'"{etag}"' and int(r.headers["content-length"]) == len(r.content)
    assert not srv.ctx.blobs.exists(hashlib.sha256(r.content).hexdigest())  # the publish wrote only the .zst
    head = c.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == r.headers["content-length"]
    assert head.content == b"" and head.headers["etag"] == r.headers["etag"]
    assert c.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    return r.content


def _check(srv: Server, channel: str, subdir: str = "noarch") -> dict[str, object]:
    srv.ctx.settle()
    expected, run_exports, cur = _from_scratch(srv, channel, subdir)
    with srv.client(None) as c:
        served = _plain(srv, c, f"/api/repo/{channel}/{subdir}/repodata.json")
        zst = c.get(f"/api/repo/{channel}/{subdir}/repodata.json.zst").content
        re_served = _plain(srv, c, f"/api/repo/{channel}/{subdir}/run_exports.json")
        re_zst = c.get(f"/api/repo/{channel}/{subdir}/run_exports.json.zst").content
        cur_served = _plain(srv, c, f"/api/repo/{channel}/{subdir}/current_repodata.json")
        cur_zst = c.get(f"/api/repo/{channel}/{subdir}/current_repodata.json.zst").content
    assert _unspaced(served) == expected
    assert zstandard.ZstdDecompressor().decompress(zst) == served  # one frame, its size in the header
    assert _unspaced(re_served) == run_exports
    assert zstandard.ZstdDecompressor().decompress(re_zst) == re_served
    assert _unspaced(cur_served) == cur
    assert zstandard.ZstdDecompressor().decompress(cur_zst) == cur_served
    _CURRENT.append(json.loads(cur))
    data: dict[str, object] = json.loads(served)
    return data


_CURRENT: list[dict[str, object]] = []  # each check's current_repodata, to see what the steps exercised


def _record(name: str, version: str, depends: list[str], **extra: object) -> dict[str, object]:
    return {
        **extra,
        "name": name,
        "version": version,
        "build": "0",
        "build_number": 0,
        "depends": depends,
        "subdir": "noarch",
        "noarch": "generic",
        "license": "MIT",
        "timestamp": 1700000000000,
        "sha256": f"{abs(hash((name, version))):064x}"[-64:],
        "md5": f"{abs(hash((name, version))):032x}"[-32:],
        "size": 1000,
    }


def _solve(url: str, tmp: Path, specs: list[str]) -> list[str]:
    async def go() -> list[str]:
        cfg = SourceConfig(sharded_enabled=False, zstd_enabled=True, bz2_enabled=False)
        gateway = Gateway(cache_dir=tmp / "gw-cache", default_config=cfg)
        records = await rattler.solve(
            sources=[Channel(url, ChannelConfig())],
            specs=specs,
            gateway=gateway,
            platforms=["linux-64", "noarch"],
            virtual_packages=[],
        )
        return sorted(f"{r.name.normalized}-{r.version}" for r in records)

    return asyncio.run(go())


def test_composed_index_equals_a_from_scratch_build_after_every_change(tiny_buckets: Server, tmp_path: Path) -> None:
    srv = tiny_buckets
    _CURRENT.clear()
    srv.channel("bk")
    # many names at once (a full build into many buckets)
    # lib0NN depends on the name before it; a few pin an older version (back-filled into current_repodata,
    # then followed: lib031 1.0 pins lib036 1.0); lib038's newest build carries a track_feature
    pins = {(25, 1): ["lib022 <2", "lib031 <2"], (25, 2): ["lib022 <2", "lib031 <2"], (31, 1): ["lib036 <2"]}
    pins |= {(33, 1): ["lib021 <2"], (33, 2): ["lib021 <2"]}
    imported = {
        f"lib{i:03d}-{v}.0-0.conda": _record(
            f"lib{i:03d}",
            f"{v}.0",
            ([f"lib{i - 1:03d}"] if i else []) + pins.get((i, v), []),
            **({"track_features": "feat"} if (i, v) == (38, 2) else {}),
        )
        for i in range(40)
        for v in (1, 2)
    }
    with srv.client() as c:
        r = c.post("/api/channels/bk/subdirs/noarch/import", json={"packages.conda": imported})
        assert r.status_code == 200, r.text
    first = _check(srv, "bk")
    assert len(first["packages.conda"]) == 80  # type: ignore[arg-type]
    state = srv.ctx.indexer._state
    assert any(len(st.buckets) > 5 for st in state.values())

    # uploads into the middle, the front and the end (incremental runs rewrite their buckets)
    for name, version, dep in (
        ("lib020", "3.0", "lib005"),
        ("aaa", "1.0", "lib005 <2"),  # back-fills lib005 1.0
        ("zzz", "1.0", "lib012 <2"),  # back-fills lib012 1.0, until lib012 is removed
        ("lib020", "4.0", "lib005, lib027 <2"),  # lib020's old newest pinned nothing; this one back-fills lib027 1.0
        ("aaa", "2.0", "lib005"),  # lib005 1.0 leaves current_repodata again
    ):
        pkg = make_conda(tmp_path, name, version, index_extra={"depends": dep.split(", ")})
        assert srv.upload("bk", pkg).status_code == 200
        _check(srv, "bk")
    assert srv.ctx.indexer.last_run and not all(r.full for r in srv.ctx.indexer.last_run.values())

    # removals: a whole name (its bucket empties), one build of another
    srv.cli("package", "remove", "bk", *(f"noarch/lib{i:03d}-{v}.0-0.conda" for i in range(10, 16) for v in (1, 2)))
    srv.cli("package", "remove", "bk", "noarch/lib030-1.0-0.conda")
    after = _check(srv, "bk")
    assert "lib012-1.0-0.conda" not in after["packages.conda"]  # type: ignore[operator]

    # patches (a full rebuild), then another upload on top (incremental again)
    patch = {"packages.conda": {"lib001-1.0-0.conda": {"license": "BSD"}}, "remove": ["lib002-1.0-0.conda"]}
    with srv.client() as c:
        r = c.put("/api/channels/bk/subdirs/noarch/patch-instructions", json=patch)
        assert r.status_code == 200, r.text
    patched = _check(srv, "bk")
    assert patched["packages.conda"]["lib001-1.0-0.conda"]["license"] == "BSD"  # type: ignore[index]
    assert "lib002-1.0-0.conda" in patched["removed"]  # type: ignore[operator]
    assert srv.upload("bk", make_conda(tmp_path, "mmm", "1.0", index_extra={"depends": ["lib039"]})).status_code == 200
    _check(srv, "bk")

    # a new process (no cached buckets) builds the same bytes
    for key in list(state):
        srv.ctx.indexer.forget(key[0])
    assert srv.upload("bk", make_conda(tmp_path, "nnn", "1.0")).status_code == 200
    _check(srv, "bk")

    # py-rattler solves through the served repodata.json.zst
    solved = _solve(f"{srv.repo}/bk", tmp_path, ["mmm"])
    assert "mmm-1.0" in solved and "lib039-2.0" in solved and "lib000-2.0" in solved

    # the steps above did exercise back-fills coming and going, their dependencies, and the feature fallback
    kept = [{*c["packages.conda"]} for c in _CURRENT]  # type: ignore[misc]
    assert any("lib022-1.0-0.conda" in k and "lib031-1.0-0.conda" in k and "lib036-1.0-0.conda" in k for k in kept)
    assert any("lib012-1.0-0.conda" in k for k in kept) and "lib021-1.0-0.conda" in kept[-1]
    assert any("lib005-1.0-0.conda" in k for k in kept) and "lib005-1.0-0.conda" not in kept[-1]
    assert "lib027-1.0-0.conda" in kept[-1] and "lib038-1.0-0.conda" in kept[-1]


def test_a_run_that_fails_leaves_no_stale_current_repodata(
    tiny_buckets: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose publish fails after the closure moved on: the next run rebuilds, the files stay exact."""
    srv = tiny_buckets
    srv.channel("fl")
    for name, version, dep in (("base", "1.0", "zlib"), ("base", "2.0", "zlib"), ("user", "1.0", "base")):
        assert srv.upload("fl", make_conda(tmp_path, name, version, index_extra={"depends": [dep]})).status_code == 200
    _check(srv, "fl")
    ix = srv.ctx.indexer
    real = srv.ctx.blobs.put_many
    calls = {"n": 0}

    def failing(items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(items)

    monkeypatch.setattr(srv.ctx.blobs, "put_many", failing)
    # the pin brings base 1.0 into current_repodata: this run's closure changes, then its publish fails
    pinned = make_conda(tmp_path, "user", "2.0", index_extra={"depends": ["base <2"]})
    assert srv.upload("fl", pinned).status_code == 200
    srv.ctx.settle()
    assert calls["n"] >= 2
    cur = _check(srv, "fl")
    assert "user-2.0-0.conda" in cur["packages.conda"]  # type: ignore[operator]
    assert "base-1.0-0.conda" in _CURRENT[-1]["packages.conda"]  # type: ignore[operator]
    assert any(r.full for r in ix.last_run.values())


def test_plain_json_downloads_are_bounded(
    tiny_buckets: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each plain JSON body being sent holds a decompressor: past ``MAX_STREAMS`` at once a GET gets a 429
    with Retry-After, while HEAD, 304s, the .zst file and shards go on."""
    from condavault.serving import decompressed

    srv = tiny_buckets
    srv.channel("bound")
    assert srv.upload("bound", make_conda(tmp_path, "bounded", "1.0")).status_code == 200
    srv.ctx.settle()
    with srv.client(None) as c:
        etag = c.get("/api/repo/bound/noarch/repodata.json").headers["etag"]
        monkeypatch.setattr(decompressed, "MAX_STREAMS", 0)
        r = c.get("/api/repo/bound/noarch/repodata.json")
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"]["code"] == "too_many_downloads"
        assert c.head("/api/repo/bound/noarch/repodata.json").status_code == 200
        assert c.get("/api/repo/bound/noarch/repodata.json", headers={"If-None-Match": etag}).status_code == 304
        assert c.get("/api/repo/bound/noarch/repodata.json.zst").status_code == 200
