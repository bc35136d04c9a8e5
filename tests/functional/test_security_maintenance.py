"""``condavault check --repair`` beside a running server loses nothing; ``check`` verifies index files and
shards against the database and ``reindex``/``--repair`` restore them; failed uploads leave no temp files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import pytest
import zstandard
from sqlalchemy import func, select

from condavault.indexing.models import PublishedFile, ShardHead
from condavault.maintenance.check import run_check
from tests.support.accounts import ok
from tests.support.packages import make_conda
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

UPLOADERS = 3
CHECK_RUNS = 20


def _temp_files(server: Server) -> list[Path]:
    blobs = server.ctx.blobs.root
    return [*(blobs / ".tmp").glob("*"), *blobs.glob("??/??/.*.part")]


def _shard_urls(c: object, channel: str, subdir: str) -> list[str]:
    raw = c.get(f"/api/repo/{channel}/{subdir}/repodata_shards.msgpack.zst")  # type: ignore[attr-defined]
    assert raw.status_code == 200
    index = msgpack.unpackb(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw.content)).read())
    return [f"/api/repo/{channel}/{subdir}/shards/{h.hex()}.msgpack.zst" for h in index["shards"].values()]


def _orphan(server: Server, age_days: float) -> str:
    data = os.urandom(64)
    sha = hashlib.sha256(data).hexdigest()
    server.ctx.blobs.put_bytes(data, sha)
    old = time.time() - age_days * 86400
    os.utime(server.ctx.blobs.local_path(sha), (old, old))
    return sha


def test_repair_twenty_times_during_an_upload_stream_loses_nothing(
    server: Server, tmp_path: Path, packages_dir: Path
) -> None:
    server.channel("mt-stream")
    pkgs = [make_conda(tmp_path, f"mt-pkg{i % 25}", f"1.{i}", "0") for i in range(UPLOADERS * 40)]
    orphans = [_orphan(server, age_days=2) for _ in range(10)]
    acknowledged: dict[str, str] = {}
    errors: list[str] = []
    done = threading.Event()

    def upload(path: Path) -> None:
        r = server.upload("mt-stream", path)
        if r.status_code == 200:
            acknowledged[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            errors.append(f"{path.name}: {r.status_code} {r.text[:200]}")

    def stream() -> None:
        try:
            with ThreadPoolExecutor(UPLOADERS) as pool:
                list(pool.map(upload, pkgs))
        finally:
            done.set()

    uploader = threading.Thread(target=stream)
    uploader.start()
    reports = []
    for _ in range(CHECK_RUNS):  # the worst case: no grace period, only the collection lock protects writes
        reports.append(run_check(server.settings, repair=True, progress=False, grace=0))
    uploader.join()
    assert done.is_set() and not errors, errors
    assert len(acknowledged) == len(pkgs)
    assert sum(r["orphan_blobs_deleted"] for r in reports) >= len(orphans)
    server.ctx.settle()
    lost = []
    with server.client(None) as c:
        listed = c.get("/api/repo/mt-stream/noarch/repodata.json").json()["packages.conda"]
        for fn, sha in acknowledged.items():
            r = c.get(f"/api/repo/mt-stream/noarch/{fn}")
            if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != sha or fn not in listed:
                lost.append(fn)
        shards = _shard_urls(c, "mt-stream", "noarch")
        assert len(shards) == 25
        assert [u for u in shards if c.get(u).status_code != 200] == []
    assert lost == [], f"{len(lost)} acknowledged uploads lost"
    for sha in orphans:
        assert not server.ctx.blobs.exists(sha)
    # and the real CLI agrees that all is well
    proc = server.cli(
        "--data-dir",
        str(server.settings.data_dir),
        "check",
        "--json",
        check=False,
        env={"CONDAVAULT_DATABASE_URL": server.settings.db_url},
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["problems"] == 0, report


def test_repair_keeps_young_blobs_superseded_index_files_and_files_in_flight(server: Server, tmp_path: Path) -> None:
    server.channel("mt-grace")
    ok(server.upload("mt-grace", make_conda(tmp_path, "mt-a", "1.0", "0")))
    with server.ctx.db.session() as s:
        first = s.scalar(
            select(func.coalesce(PublishedFile.source_sha256, PublishedFile.sha256)).where(
                PublishedFile.path == "repodata.json", PublishedFile.subdir == "noarch"
            )
        )
    ok(server.upload("mt-grace", make_conda(tmp_path, "mt-a", "2.0", "0")))
    server.ctx.settle()
    young, old = _orphan(server, age_days=0), _orphan(server, age_days=2)
    tmp_young = server.ctx.blobs.tmp / "inflight.part"
    tmp_young.write_bytes(b"upload in progress")
    tmp_old = server.ctx.blobs.tmp / "killed.part"
    tmp_old.write_bytes(b"left by a killed process")
    stamp = time.time() - 2 * 3600
    os.utime(tmp_old, (stamp, stamp))
    proc = server.cli(
        "--data-dir",
        str(server.settings.data_dir),
        "check",
        "--repair",
        "--json",
        check=False,
        env={"CONDAVAULT_DATABASE_URL": server.settings.db_url},
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert report["orphan_blobs_deleted"] >= 1 and report["orphan_blobs_within_grace"] >= 2
    assert server.ctx.blobs.exists(first), "a superseded repodata.json.zst younger than the grace period went"
    assert server.ctx.blobs.exists(young) and not server.ctx.blobs.exists(old)
    assert tmp_young.exists() and not tmp_old.exists()


def test_check_finds_missing_index_files_and_shards_and_repair_or_reindex_restores_them(
    server: Server, packages_dir: Path
) -> None:
    server.channel("mt-index")
    for name in ("dependency-1.0-0.conda", "dependent-1.0-0.conda"):
        ok(server.upload("mt-index", packages_dir / "noarch" / name))
    server.ctx.settle()
    ctx = server.ctx
    env = {"CONDAVAULT_DATABASE_URL": server.settings.db_url}
    with ctx.db.session() as s:
        repodata = s.scalar(
            select(func.coalesce(PublishedFile.source_sha256, PublishedFile.sha256)).where(
                PublishedFile.path == "repodata.json", PublishedFile.subdir == "noarch"
            )
        )
        shards = list(s.scalars(select(ShardHead.sha256).where(ShardHead.subdir == "noarch")))
    with server.client(None) as c:
        urls = _shard_urls(c, "mt-index", "noarch")
    for sha in [repodata, *shards]:
        ctx.blobs.delete(sha)
    ctx.lookup.invalidate()
    proc = server.cli("--data-dir", str(server.settings.data_dir), "check", "--json", check=False, env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert len(report["missing_index_files"]) >= 1 + len(shards)
    # reindex through the API brings back the shards too
    server.cli("reindex", "mt-index")
    with server.client(None) as c:
        assert [u for u in urls if c.get(u).status_code != 200] == []
        assert c.get("/api/repo/mt-index/noarch/repodata.json").status_code == 200
    # check --repair does the same for anything deleted again
    for sha in shards:
        ctx.blobs.delete(sha)
    proc = server.cli("--data-dir", str(server.settings.data_dir), "check", "--repair", "--json", check=False, env=env)
    assert json.loads(proc.stdout)["missing_index_files"]
    ctx.lookup.invalidate()
    with server.client(None) as c:
        assert [u for u in urls if c.get(u).status_code != 200] == []
    proc = server.cli("--data-dir", str(server.settings.data_dir), "check", "--json", check=False, env=env)
    assert proc.returncode == 0, proc.stdout


def test_refused_uploads_leave_no_temp_files(server: Server, packages_dir: Path) -> None:
    server.channel("mt-refuse")
    pkg = packages_dir / "noarch" / "dependency-1.0-0.conda"
    for params in ({"subdir": "not a subdir!"}, {"subdir": "linux-64"}, {"sha256": "0" * 64}, {"force": "maybe"}):
        r = server.upload("mt-refuse", pkg, **params)
        assert 400 <= r.status_code < 500, (params, r.text)
        assert _temp_files(server) == [], params


def test_the_server_sweeps_temp_files_killed_writes_left(server: Server) -> None:
    folders = [server.ctx.blobs.tmp, server.settings.data_dir / "vulns" / "uploads"]
    old = time.time() - 2 * 3600
    left = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("a.part", "b.part"):
            (folder / name).write_bytes(b"x")
            os.utime(folder / name, (old, old))
            left.append(folder / name)
    fresh = server.ctx.blobs.tmp / "fresh.part"
    fresh.write_bytes(b"y")
    assert server.ctx.sweep_temp_files() == len(left)  # the job the server runs every 10 minutes
    assert not any(p.exists() for p in left) and fresh.exists()
