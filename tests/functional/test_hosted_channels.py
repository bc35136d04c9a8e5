"""The foundation issue's proof: real packages in, real clients out, over HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import rattler
from rattler import Channel, ChannelConfig, Gateway, SourceConfig

from tests.support.server import Server


@pytest.fixture(scope="module")
def all_packages(packages_dir: Path) -> list[Path]:
    files = sorted(p for p in packages_dir.glob("*/*") if p.name.endswith((".conda", ".tar.bz2")))
    assert len(files) == 302
    return files


@pytest.fixture(scope="module")
def full_channel(shared_server: Server, all_packages: list[Path]) -> str:
    shared_server.channel("everything")
    proc = shared_server.cli("upload", "everything", *map(str, all_packages), timeout=900)
    assert "302 created" in proc.stdout, proc.stdout + proc.stderr
    return "everything"


def test_served_repodata_lists_exactly_the_uploaded_files(
    shared_server: Server, full_channel: str, all_packages: list[Path]
) -> None:
    by_subdir: dict[str, dict[str, Path]] = {}
    for p in all_packages:
        by_subdir.setdefault(p.parent.name, {})[p.name] = p
    with shared_server.client(None) as c:
        for subdir, files in by_subdir.items():
            r = c.get(f"/api/repo/{full_channel}/{subdir}/repodata.json")
            assert r.status_code == 200
            repodata = r.json()
            listed = {**repodata["packages"], **repodata["packages.conda"]}
            assert set(listed) == set(files), subdir
            for fn, rec in listed.items():
                served = c.get(f"/api/repo/{full_channel}/{subdir}/{fn}")
                assert served.status_code == 200
                body = served.content
                assert rec["size"] == len(body) == files[fn].stat().st_size
                assert rec["sha256"] == hashlib.sha256(body).hexdigest()
                assert rec["md5"] == hashlib.md5(body).hexdigest()
                assert rec["subdir"] == subdir
                assert isinstance(rec["indexed_timestamp"], int)
            zst = c.get(f"/api/repo/{full_channel}/{subdir}/repodata.json.zst")
            import zstandard

            assert json.loads(zstandard.ZstdDecompressor().decompress(zst.content)) == repodata


def _solve_and_install(channel_url: str, tmp: Path, sharded: bool) -> list[str]:
    async def go() -> list[str]:
        cfg = SourceConfig(sharded_enabled=sharded, zstd_enabled=not sharded, bz2_enabled=False)
        gateway = Gateway(cache_dir=tmp / "gw-cache", default_config=cfg)
        channel = Channel(channel_url, ChannelConfig())
        records = await rattler.solve(
            sources=[channel],
            specs=["another_dependent"],
            gateway=gateway,
            platforms=["linux-64", "noarch"],
            virtual_packages=[],
        )
        await rattler.install(records, target_prefix=tmp / "env", cache_dir=tmp / "pkgs")
        return sorted(r.name.normalized for r in records)

    return asyncio.run(go())


@pytest.mark.parametrize("sharded", [False, True], ids=["zst", "shards"])
def test_rattler_installs_from_the_server(
    shared_server: Server, full_channel: str, tmp_path: Path, sharded: bool
) -> None:
    start = len(shared_server.requests)
    names = _solve_and_install(f"{shared_server.repo}/{full_channel}", tmp_path, sharded)
    assert names == ["another_dependent", "dependency", "dependent"]
    meta = {p.name for p in (tmp_path / "env" / "conda-meta").glob("*.json")}
    assert {"another_dependent-2.0-0.json", "dependent-2.0-0.json", "dependency-2.0-0.json"} <= meta
    seen = [(m, p, s) for m, p, s in shared_server.requests[start:] if p.startswith(f"/api/repo/{full_channel}/")]
    paths = [p for _m, p, _s in seen]
    if sharded:
        assert not any(p.endswith("repodata.json") or p.endswith("repodata.json.zst") for p in paths), paths
        shard_gets = [p for p in paths if "/shards/" in p]
        # only the shards of the three names in the closure (each looked up in linux-64 and noarch at most)
        assert 3 <= len(shard_gets) <= 3, shard_gets
        assert all(p.rsplit("/", 3)[-3] == "noarch" for p in shard_gets)
    else:
        assert any(p.endswith("/noarch/repodata.json.zst") for p in paths)
        assert not any("/shards/" in p for p in paths)


def test_shard_index_names_every_package(shared_server: Server, full_channel: str) -> None:
    import msgpack
    import zstandard

    with shared_server.client(None) as c:
        r = c.get(f"/api/repo/{full_channel}/noarch/repodata_shards.msgpack.zst")
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(r.content))
        repodata = c.get(f"/api/repo/{full_channel}/noarch/repodata.json").json()
        names = {rec["name"] for rec in {**repodata["packages"], **repodata["packages.conda"]}.values()}
        assert set(index["shards"]) == names
        assert index["info"]["shards_base_url"] == "./shards/" and index["info"]["base_url"] == ""
        digest = index["shards"]["dependent"].hex()
        shard_resp = c.get(f"/api/repo/{full_channel}/noarch/shards/{digest}.msgpack.zst")
        assert shard_resp.status_code == 200
        assert hashlib.sha256(shard_resp.content).hexdigest() == digest
        assert "immutable" in shard_resp.headers["cache-control"]
        shard = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(shard_resp.content))
        assert set(shard["packages.conda"]) == {"dependent-1.0-0.conda", "dependent-2.0-0.conda"}
        rec = shard["packages.conda"]["dependent-2.0-0.conda"]
        assert isinstance(rec["sha256"], bytes) and len(rec["sha256"]) == 32
        assert rec["sha256"].hex() == repodata["packages.conda"]["dependent-2.0-0.conda"]["sha256"]


def test_channeldata_current_repodata_and_run_exports(shared_server: Server, full_channel: str) -> None:
    shared_server.ctx.index_now(shared_server.ctx.channels.lookup(full_channel).id)  # the slow lane, now
    with shared_server.client(None) as c:
        cd = c.get(f"/api/repo/{full_channel}/channeldata.json").json()
        assert cd["channeldata_version"] == 1
        assert {"linux-64", "noarch", "osx-64", "osx-arm64", "win-64", "win-32"} <= set(cd["subdirs"])
        assert cd["packages"]["dependent"]["version"] == "2.0"
        assert cd["packages"]["zlib"]["subdirs"] == ["linux-64", "osx-64", "win-32", "win-64"]
        cur = c.get(f"/api/repo/{full_channel}/noarch/current_repodata.json").json()
        cur_files = {**cur["packages"], **cur["packages.conda"]}
        assert "dependent-2.0-0.conda" in cur_files and "dependent-1.0-0.conda" not in cur_files
        re_ = c.get(f"/api/repo/{full_channel}/linux-64/run_exports.json").json()
        full = c.get(f"/api/repo/{full_channel}/linux-64/repodata.json").json()
        assert set(re_["packages.conda"]) == set(full["packages.conda"])
        assert set(re_["packages"]) == set(full["packages"])
        assert re_["packages.conda"]["depends-run_exports-lib-1.0-h9f3fcab_0.conda"]["run_exports"] is not None


def test_http_semantics(shared_server: Server, full_channel: str, packages_dir: Path) -> None:
    pkg = packages_dir / "noarch" / "andes-1.8.3-pyhd8ed1ab_0.conda"
    size = pkg.stat().st_size
    data = pkg.read_bytes()
    base = f"/api/repo/{full_channel}/noarch"
    with shared_server.client(None) as c:
        r = c.get(f"{base}/repodata.json.zst")
        assert r.headers["content-type"] == "application/zstd" and "content-encoding" not in r.headers
        etag, lm = r.headers["etag"], r.headers["last-modified"]
        assert "max-age=" in r.headers["cache-control"] and "immutable" not in r.headers["cache-control"]
        assert c.get(f"{base}/repodata.json.zst", headers={"If-None-Match": etag}).status_code == 304
        assert c.get(f"{base}/repodata.json.zst", headers={"If-Modified-Since": lm}).status_code == 304
        head = c.head(f"{base}/repodata.json.zst")
        assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
        assert c.head(f"{base}/repodata.json.bz2").status_code == 404
        assert c.get(f"{base}/repodata.json").headers["content-type"].startswith("application/json")
        # packages: immutable, ranges incl. suffix ranges
        full = c.get(f"{base}/{pkg.name}")
        assert "immutable" in full.headers["cache-control"] and full.headers["accept-ranges"] == "bytes"
        part = c.get(f"{base}/{pkg.name}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        suffix = c.get(f"{base}/{pkg.name}", headers={"Range": "bytes=-10240"})
        assert suffix.status_code == 206 and suffix.content == data[-10240:]
        huge = c.get(f"{base}/{pkg.name}", headers={"Range": f"bytes=-{size * 4}"})
        assert huge.status_code == 206 and huge.content == data
        resume = c.get(f"{base}/{pkg.name}", headers={"Range": f"bytes={size - 5}-"})
        assert resume.status_code == 206 and resume.content == data[-5:]
        assert c.head(f"{base}/{pkg.name}").headers["content-length"] == str(size)
        # the token form of every URL
        tok = c.get(f"/api/repo/t/{shared_server.admin_token}/{full_channel}/noarch/repodata.json")
        assert tok.status_code == 200
        bad = c.get(f"/api/repo/t/not-a-token/{full_channel}/noarch/repodata.json")
        assert bad.status_code == 401
        assert c.get(f"/api/repo/{full_channel}/noarch/nope-1.0-0.conda").status_code == 404
        # dot segments are resolved before routing: this asks for a channel named "etc", which does not exist
        assert c.get(f"/api/repo/{full_channel}/noarch/../../etc/passwd").status_code == 401


def test_identical_reupload_is_a_noop_and_different_bytes_conflict(
    shared_server: Server, full_channel: str, packages_dir: Path, tmp_path: Path
) -> None:
    pkg = packages_dir / "noarch" / "dependency-1.0-0.conda"
    r = shared_server.upload(full_channel, pkg)
    assert r.status_code == 200 and r.json()["status"] == "unchanged"
    with shared_server.client() as c:
        etag = c.get(f"/api/repo/{full_channel}/noarch/repodata.json").headers["etag"]
    other = tmp_path / pkg.name
    from tests.support.packages import make_conda

    make_conda(tmp_path, "dependency", "1.0", "0", "noarch")
    assert other.read_bytes() != pkg.read_bytes()
    r = shared_server.upload(full_channel, other)
    assert r.status_code == 409 and r.json()["error"]["code"] == "filename_conflict"
    assert not shared_server.ctx.blobs.exists(hashlib.sha256(other.read_bytes()).hexdigest())
    proc = shared_server.cli("upload", full_channel, str(other), check=False)
    assert proc.returncode == 2 and "filename_conflict" in proc.stdout + proc.stderr
    proc = shared_server.cli("upload", "--skip-existing", full_channel, str(other))
    assert "1 skipped" in proc.stdout
    with shared_server.client() as c:
        assert c.get(f"/api/repo/{full_channel}/noarch/repodata.json").headers["etag"] == etag


def test_copy_move_remove_and_listing(shared_server: Server, full_channel: str, tmp_path: Path) -> None:
    shared_server.channel("staging")
    shared_server.channel("prod")
    shared_server.cli(
        "package", "copy", full_channel, "staging", "noarch/dependency-1.0-0.conda", "noarch/dependency-2.0-0.conda"
    )
    shared_server.cli("package", "move", "staging", "prod", "noarch/dependency-2.0-0.conda")
    with shared_server.client(None) as c:
        staging = c.get("/api/repo/staging/noarch/repodata.json").json()["packages.conda"]
        prod = c.get("/api/repo/prod/noarch/repodata.json").json()["packages.conda"]
        assert set(staging) == {"dependency-1.0-0.conda"}
        assert set(prod) == {"dependency-2.0-0.conda"}
        assert c.get("/api/repo/prod/noarch/dependency-2.0-0.conda").status_code == 200
    listing = json.loads(shared_server.cli("package", "list", "prod", "--json").stdout)
    assert [f["filename"] for f in listing] == ["dependency-2.0-0.conda"]
    shared_server.cli("package", "remove", "prod", "noarch/dependency-2.0-0.conda")
    with shared_server.client(None) as c:
        assert c.get("/api/repo/prod/noarch/repodata.json").json()["packages.conda"] == {}
        assert c.get("/api/repo/prod/noarch/dependency-2.0-0.conda").status_code == 404
    out = shared_server.cli("client-config", "prod").stdout
    assert f"channel_alias: {shared_server.url}/api/repo" in out and "- prod" in out
    out = shared_server.cli("client-config", "prod", "--format", "pixi").stdout
    assert f'channels = ["{shared_server.url}/api/repo/prod"]' in out


def test_check_and_reindex(shared_server: Server, full_channel: str) -> None:
    shared_server.cli("reindex", full_channel)
    shared_server.channel("checked")
    shared_server.cli("package", "copy", full_channel, "checked", "noarch/dependency-1.0-0.conda")
    ctx = shared_server.ctx
    with ctx.db.session() as s:
        from sqlalchemy import select

        from condavault.channels.models import Channel, Record

        cid = s.scalar(select(Channel.id).where(Channel.name == "checked"))
        sha = s.scalar(select(Record.sha256).where(Record.channel_id == cid))
        shared_blob_users = len(list(s.scalars(select(Record.id).where(Record.sha256 == sha))))
    path = ctx.blobs.local_path(sha)
    saved = path.read_bytes()
    path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    try:
        proc = shared_server.cli(
            "--data-dir",
            str(shared_server.settings.data_dir),
            "check",
            "--json",
            check=False,
            env={"CONDAVAULT_DATABASE_URL": shared_server.settings.db_url},
        )
        report = json.loads(proc.stdout) if proc.returncode in (0, 1) and proc.stdout.startswith("{") else None
    finally:
        path.write_bytes(saved)
    assert report is not None, proc.stderr
    assert proc.returncode == 1
    assert len(report["corrupt_blobs"]) == shared_blob_users
    assert report["problems"] >= shared_blob_users


def test_health_ready_metrics_openapi(shared_server: Server) -> None:
    with shared_server.client(None) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/readyz").json()["status"] == "ready"
        metrics = c.get("/metrics").text
        assert "condavault_package_downloads_total" in metrics
        spec = c.get("/api/openapi.json").json()
        assert "/api/channels/{name}/files" in spec["paths"]
