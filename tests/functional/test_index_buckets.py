"""Issue 15: the index composed from buckets on disk equals a from-scratch build, run after run.

Buckets are made tiny here (a few hundred bytes) so that uploads, removals and patches split, rewrite
and empty them; after each step the served ``repodata.json``, its ``.zst`` and ``run_exports.json`` must
be exactly what the pure builders make of every record read anew, and py-rattler must solve through the
served ``repodata.json.zst``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rattler
import zstandard
from rattler import Channel, ChannelConfig, Gateway, SourceConfig
from sqlalchemy import select

from condavault.channels.models import Channel as ChannelRow
from condavault.indexing import buckets, builder
from tests.support.packages import make_conda
from tests.support.server import Server, start_server, stop_server


@pytest.fixture
def tiny_buckets(tmp_path: Path, db_backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(buckets, "TARGET", 600)
    srv, pg = start_server(tmp_path / "srv", db_backend)
    try:
        yield srv
    finally:
        stop_server(srv, pg)


def _from_scratch(srv: Server, channel: str, subdir: str) -> tuple[bytes, bytes]:
    ix = srv.ctx.indexer
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(ChannelRow.id).where(ChannelRow.name == channel))
        assert cid is not None
        segments = {n: builder.build_segment(rows) for n, rows in ix._rows_by_name(s, cid, subdir)}
    return builder.compose_repodata(subdir, segments), builder.compose_run_exports(subdir, segments)


def _check(srv: Server, channel: str, subdir: str = "noarch") -> dict[str, object]:
    srv.ctx.settle()
    expected, run_exports = _from_scratch(srv, channel, subdir)
    with srv.client(None) as c:
        served = c.get(f"/api/repo/{channel}/{subdir}/repodata.json").content
        zst = c.get(f"/api/repo/{channel}/{subdir}/repodata.json.zst").content
        re_served = c.get(f"/api/repo/{channel}/{subdir}/run_exports.json").content
        re_zst = c.get(f"/api/repo/{channel}/{subdir}/run_exports.json.zst").content
    assert served == expected
    assert zstandard.ZstdDecompressor().decompress(zst) == expected  # one frame, its size in the header
    assert re_served == run_exports
    assert zstandard.ZstdDecompressor().decompress(re_zst) == run_exports
    data: dict[str, object] = json.loads(served)
    return data


def _record(name: str, version: str, depends: list[str]) -> dict[str, object]:
    return {
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
    srv.channel("bk")
    # many names at once (a full build into many buckets)
    imported = {
        f"lib{i:03d}-{v}.0-0.conda": _record(f"lib{i:03d}", f"{v}.0", [f"lib{i - 1:03d}"] if i else [])
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
    for name, version in (("lib020", "3.0"), ("aaa", "1.0"), ("zzz", "1.0"), ("lib020", "4.0")):
        pkg = make_conda(tmp_path, name, version, index_extra={"depends": ["lib005"]})
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
