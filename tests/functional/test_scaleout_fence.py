"""Index publishing is fenced across processes: a run whose subdir lease was taken over by another process
(its lease expired: a machine that stalled) publishes nothing, and the new holder's publish stands.

The second indexer is a separate ``Indexer`` on the same database and blob folder, i.e. another process's
(its own lease holder id). The take-over is injected at the one moment that matters: after the run
built its files, before its publishing transaction.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from condavault.indexing.indexer import Indexer
from condavault.indexing.models import PublishedFile, SubdirState
from condavault.storage.local import LocalBlobStore
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _state(server: Server, cid: int) -> tuple[int, int, str | None]:
    with server.ctx.db.session() as s:
        row = s.execute(
            select(SubdirState.change_seq, SubdirState.indexed_seq, SubdirState.lease_holder).where(
                SubdirState.channel_id == cid, SubdirState.subdir == "noarch"
            )
        ).one()
    return int(row[0]), int(row[1]), row[2]


def _pointer(server: Server, cid: int) -> tuple[str, int]:
    with server.ctx.db.session() as s:
        row = s.execute(
            select(PublishedFile.sha256, PublishedFile.revision).where(
                PublishedFile.channel_id == cid, PublishedFile.subdir == "noarch", PublishedFile.path == "repodata.json"
            )
        ).one()
    return row[0], int(row[1])


def test_a_run_that_lost_its_lease_publishes_nothing(server: Server, packages_dir: Path) -> None:
    server.channel("fence")
    pkg = packages_dir / "noarch" / "dependency-1.0-0.conda"
    assert server.upload("fence", pkg).status_code in (200, 201)
    ref = server.ctx.channels.lookup("fence")
    assert ref is not None
    cid = ref.id
    before = _pointer(server, cid)
    other = "machine-b:4242:cafe"  # another machine's holder: never "dead" from here, only expired

    stalled = Indexer(server.settings, server.ctx.db, LocalBlobStore(server.settings.blobs_path))
    put_many = stalled.blobs.put_many

    def taken_over_meanwhile(items):  # type: ignore[no-untyped-def]
        # the stalled run's lease expired and machine B took the subdir over
        server.ctx.db.run_write(
            lambda s: s.execute(
                update(SubdirState)
                .where(SubdirState.channel_id == cid, SubdirState.subdir == "noarch")
                .values(lease_holder=other, lease_until=time.time() + 120)
            )
        )
        return put_many(items)

    stalled.blobs.put_many = taken_over_meanwhile  # type: ignore[method-assign]
    # this server's sweep stays away from the channel, and its own indexer has finished the upload's run
    # (whose loop would otherwise pick up the change below) and starts none while this lasts
    with server.ctx.hold_index(cid), server.ctx.indexer._locks[(cid, "noarch")]:
        server.ctx.db.run_write(  # the subdir needs a full rebuild (as after a repair)
            lambda s: s.execute(
                update(SubdirState)
                .where(SubdirState.channel_id == cid, SubdirState.subdir == "noarch")
                .values(change_seq=SubdirState.change_seq + 1, full_seq=SubdirState.change_seq + 1)
            )
        )
        change, indexed, _ = _state(server, cid)
        assert change > indexed
        assert stalled.index_subdir(cid, "noarch") is False  # built everything, published nothing
        assert _pointer(server, cid) == before
        assert _state(server, cid) == (change, indexed, other)  # B's lease untouched, nothing marked indexed

        # once B's lease is gone (expired), a run publishes normally
        server.ctx.db.run_write(
            lambda s: s.execute(
                update(SubdirState)
                .where(SubdirState.channel_id == cid, SubdirState.subdir == "noarch")
                .values(lease_until=0.0)
            )
        )
        stalled.blobs.put_many = put_many  # type: ignore[method-assign]
        assert stalled.index_subdir(cid, "noarch") is True
    assert _state(server, cid)[1] == change  # published (same records: the same repodata.json as before)
    assert _pointer(server, cid)[0] == before[0]
    with server.client(None) as c:
        r = c.get("/api/repo/fence/noarch/repodata.json")
        assert r.status_code == 200 and pkg.name in r.json()["packages.conda"]
