"""Concurrent writers into one subdir: no lost records, no lost updates, no half-written index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from condavault.indexing.models import SubdirState
from tests.support.packages import make_conda
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def test_four_processes_fifty_concurrent_uploads_each(server: Server, tmp_path: Path) -> None:
    server.channel("busy")
    files = [make_conda(tmp_path, f"conc{i % 4}", f"1.{i}", "0", "noarch") for i in range(200)]
    batches = [files[i::4] for i in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.upload_worker",
                server.url,
                server.admin_token,
                "busy",
                *map(str, batch),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in batches
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out + err
        assert "50 ok of 50" in out
    server.ctx.settle()
    with server.client(None) as c:
        listed = c.get("/api/repo/busy/noarch/repodata.json").json()["packages.conda"]
        assert set(listed) == {f.name for f in files}
        import msgpack
        import zstandard

        index = msgpack.unpackb(
            zstandard.ZstdDecompressor().decompress(c.get("/api/repo/busy/noarch/repodata_shards.msgpack.zst").content)
        )
        in_shards = set()
        for name, digest in index["shards"].items():
            shard = msgpack.unpackb(
                zstandard.ZstdDecompressor().decompress(
                    c.get(f"/api/repo/busy/noarch/shards/{digest.hex()}.msgpack.zst").content
                )
            )
            assert {r["name"] for r in shard["packages.conda"].values()} == {name}
            in_shards |= set(shard["packages.conda"])
        assert in_shards == set(listed)
    # the indexer coalesced the burst: far fewer publishes than uploads
    with server.ctx.db.session() as s:
        state = s.scalar(select(SubdirState).where(SubdirState.subdir == "noarch"))
        assert state is not None and state.indexed_seq == state.change_seq
        publishes = server.ctx.indexer.publishes[(state.channel_id, "noarch")]
    assert publishes < 200, publishes


def test_an_upload_rereads_only_its_own_package_name(server: Server, tmp_path: Path) -> None:
    """Incremental indexing: the other 3,000 records of the subdir are neither re-read nor re-serialised."""
    server.channel("incremental")
    repodata = {"packages.conda": {}}
    for i in range(3000):
        name, version = f"bulk{i % 300}", f"1.{i // 300}"
        repodata["packages.conda"][f"{name}-{version}-0.conda"] = {
            "name": name,
            "version": version,
            "build": "0",
            "build_number": 0,
            "depends": [],
            "subdir": "noarch",
            "sha256": f"{i:064x}",
            "md5": "0" * 32,
            "size": 100,
            "timestamp": 1700000000000,
        }
    with server.client() as c:
        assert c.post("/api/channels/incremental/subdirs/noarch/import", json=repodata).status_code == 200
    server.ctx.settle()
    cid = server.ctx.channels.lookup("incremental").id
    assert server.ctx.indexer.last_run[(cid, "noarch")].records == 3000
    r = server.upload("incremental", make_conda(tmp_path, "newcomer", "1.0", "0", "noarch"))
    assert r.status_code == 200 and r.json()["indexed"]
    stats = server.ctx.indexer.last_run[(cid, "noarch")]
    assert stats.full is False
    assert stats.rows_read == 1 and stats.names_changed == 1
    assert stats.records == 3001
    with server.client(None) as c:
        assert "newcomer-1.0-0.conda" in c.get("/api/repo/incremental/noarch/repodata.json").json()["packages.conda"]


def test_index_lease_of_a_killed_process_is_taken_over(server: Server, tmp_path: Path) -> None:
    """A process killed mid-index (kill -9) leaves its lease behind; the next indexer takes it over."""
    import socket

    from sqlalchemy import update

    from condavault.indexing.dirty import mark_dirty

    server.channel("orphaned")
    cid = server.ctx.channels.lookup("orphaned").id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with server.ctx.db.write_session() as s:
        s.execute(
            update(SubdirState)
            .where(SubdirState.channel_id == cid)
            .values(lease_holder=f"{socket.gethostname()}:{dead.pid}:dead", lease_until=1e12)
        )
        mark_dirty(s, cid, "noarch", None)
    assert (cid, "noarch") in server.ctx.indexer.pending_subdirs()
    assert server.ctx.indexer.index_subdir(cid, "noarch") is True
    with server.ctx.db.session() as s:
        state = s.scalar(select(SubdirState).where(SubdirState.channel_id == cid))
        assert state.indexed_seq == state.change_seq and state.lease_holder is None


def test_an_index_run_that_keeps_failing_is_retried_after_a_growing_pause(server: Server, tmp_path: Path) -> None:
    """A subdir whose index run fails every time (a full disk, a record the encoders refuse) is retried
    by the sweep after 2 s, 4 s, ... -- not on every sweep -- and an explicit request still runs it."""
    import time

    from condavault.indexing.dirty import mark_dirty

    server.channel("failing")
    cid = server.ctx.channels.lookup("failing").id
    real = server.ctx.indexer.index_subdir
    calls: list[float] = []

    def broken(channel_id: int, subdir: str) -> bool:
        if channel_id == cid:
            calls.append(time.monotonic())
            raise OSError(28, "No space left on device")
        return real(channel_id, subdir)

    server.ctx.indexer.index_subdir = broken  # type: ignore[method-assign]
    try:
        with server.ctx.db.write_session() as s:
            mark_dirty(s, cid, "noarch", None)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            server.ctx.sweep()  # five times a second: without the pause, about 25 runs
            time.sleep(0.2)
        while server.ctx.runner.busy():
            time.sleep(0.05)
        assert 1 <= len(calls) <= 3, calls  # at 0 s, 2 s (and 6 s, past the window)
    finally:
        server.ctx.indexer.index_subdir = real  # type: ignore[method-assign]
    server.ctx.request_index(cid, "noarch")  # an explicit request does not wait for the pause
    server.ctx.settle()
    assert (cid, "noarch") not in server.ctx.indexer.pending_subdirs()
    server.ctx.sweep()
    assert (cid, "noarch") not in server.ctx._index_failures
