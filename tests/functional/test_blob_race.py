"""A failed ingest cleaning up its blob must not delete bytes a concurrent ingest of the same file is
about to reference (issue 11, finding 5), and ``check --repair``'s orphan sweep obeys the same rule."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from condavault.channels.blobs import BlobGuard
from condavault.channels.ingest import Ingested, IngestItem, Ingestor
from condavault.channels.records import put_record
from condavault.channels.services import get_channel
from condavault.errors import Conflict
from condavault.jobs.holders import new_holder
from condavault.packages.spool import Received
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

PKG = ("noarch", "dependency-1.0-0.conda")


class Paused(Ingestor):
    """An ingest that runs ``hook`` after its blobs are stored and before its rows are written."""

    def __init__(self, server: Server, hook: Any) -> None:
        c = server.ctx
        super().__init__(c.settings, c.db, c.blobs, c.events)
        self.hook = hook

    def _write(self, channel_id: int, channel_name: str, live: list[Ingested], actor: str | None) -> None:
        self.hook(live)
        super()._write(channel_id, channel_name, live, actor)


def test_a_failed_ingest_keeps_a_blob_another_ingest_is_about_to_use(server: Server, packages_dir: Path) -> None:
    data = packages_dir.joinpath(*PKG).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    server.channel("race-a")
    server.channel("race-b")
    a_stored, b_staged, a_done = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, list[Ingested]] = {}

    def a_hook(live: list[Ingested]) -> None:
        assert live[0].new_blob  # A wrote the blob
        a_stored.set()
        # meanwhile another writer takes A's filename with other bytes: A's row insert will conflict
        with server.ctx.db.write_session() as s:
            put_record(
                s,
                get_channel(s, "race-a"),
                PKG[0],
                PKG[1],
                {"name": "dependency", "version": "1.0", "build": "0", "sha256": "0" * 64},
            )
        assert b_staged.wait(30)

    def b_hook(live: list[Ingested]) -> None:
        assert not live[0].new_blob  # B found A's blob and wrote none
        b_staged.set()
        assert a_done.wait(30)  # B's row lands only after A has failed and cleaned up

    def run(name: str, ing: Ingestor, channel: str) -> None:
        try:
            results[name] = ing.ingest_many(channel, [IngestItem(Received.of_bytes(data), PKG[1])], actor="t")
        finally:
            if name == "a":
                a_done.set()

    ta = threading.Thread(target=run, args=("a", Paused(server, a_hook), "race-a"))
    ta.start()
    assert a_stored.wait(30)  # B starts once A's blob is on disk
    tb = threading.Thread(target=run, args=("b", Paused(server, b_hook), "race-b"))
    tb.start()
    ta.join(60)
    tb.join(60)
    assert isinstance(results["a"][0].error, Conflict), results["a"][0].error
    assert results["b"][0].result is not None and results["b"][0].result.status == "created"
    assert server.ctx.blobs.exists(sha), "the failed ingest deleted the blob the other one uses"
    server.ctx.settle()
    with server.client(None) as c:
        r = c.get(f"/api/repo/race-b/{PKG[0]}/{PKG[1]}")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha


def test_pins_hold_a_blob_while_their_holder_lives(server: Server) -> None:
    """The rule ``check --repair`` and failed ingests share: no delete while a live ingest pins a blob;
    a pin of a dead holder does not count."""
    data = b"not referenced by any record"
    sha = hashlib.sha256(data).hexdigest()
    server.ctx.blobs.put_bytes(data, sha)
    other = BlobGuard(server.ctx.db, server.ctx.blobs, new_holder())  # another process's ingest
    other.pin([sha])
    guard = server.ctx.ingestor.guard
    assert guard.delete_if_unreferenced(sha) is False and server.ctx.blobs.exists(sha)
    dead = BlobGuard(server.ctx.db, server.ctx.blobs, f"{new_holder().split(':')[0]}:999999999:gone")
    other.unpin_now([sha])
    dead.pin([sha])
    assert guard.delete_if_unreferenced(sha) is True and not server.ctx.blobs.exists(sha)


def test_the_same_file_stored_by_two_requests_at_once(server: Server, packages_dir: Path) -> None:
    """Two ingests of one file into one channel reach their row insert together: one creates the record,
    the other finds it (on PostgreSQL after a unique violation it retries): nothing fails."""
    data = packages_dir.joinpath(*PKG).read_bytes()
    server.channel("race-same")
    barrier = threading.Barrier(2, timeout=30)
    results: list[Ingested] = []

    def run() -> None:
        ing = Paused(server, lambda _live: barrier.wait())
        results.extend(ing.ingest_many("race-same", [IngestItem(Received.of_bytes(data), PKG[1])], actor="t"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.error for r in results] == [None, None], [r.error for r in results]
    assert sorted(r.result.status for r in results if r.result) == ["created", "unchanged"]


def test_check_repair_takes_only_old_unpinned_orphans(server: Server) -> None:
    import os
    import time

    from condavault.maintenance.check import run_check

    blobs = server.ctx.blobs
    made = {}
    for label in ("old", "fresh", "pinned"):
        data = f"orphan {label}".encode()
        sha = hashlib.sha256(data).hexdigest()
        blobs.put_bytes(data, sha)
        made[label] = sha
    for label in ("old", "pinned"):  # written two hours ago
        os.utime(blobs.path(made[label]), (time.time() - 7200, time.time() - 7200))
    BlobGuard(server.ctx.db, blobs, new_holder()).pin([made["pinned"]])  # a live ingest is about to use it
    report = run_check(server.settings, repair=True, progress=False, grace=3600)
    assert report["orphan_blobs"] >= 3
    assert not blobs.exists(made["old"])
    assert blobs.exists(made["fresh"]), "a blob written a moment ago may be an index being published"
    assert blobs.exists(made["pinned"])
