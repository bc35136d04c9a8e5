"""Batched ingest: bad files in the middle of a batch are reported with their own codes while the rest
lands, a row that spoils a batch's transaction fails alone, and a running mirror holds its channel's
index (the periodic sweep leaves it to the run's own publish)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from condavault.channels.ingest import IngestItem
from condavault.channels.models import Channel
from condavault.indexing.dirty import mark_dirty
from condavault.mirror import services as mirror_svc
from tests.support.packages import file_member, make_conda
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, check_served_files, create_mirror, repodata_files, run_mirror

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

GOOD = [f"good{i}" for i in range(6)]


def _record(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    name, version, build = path.name[: -len(".conda")].rsplit("-", 2)
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "subdir": "noarch",
        "noarch": "generic",
        "license": "MIT",
        "timestamp": 1700000000000,
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    """Six good packages, one whose archive escapes its root (upstream's sha256 is that of those very
    bytes, so only the archive walk can catch it), one truncated archive (likewise), and one that the
    server corrupts on the way (a checksum mismatch)."""
    root = tmp_path_factory.mktemp("batch-upstream")
    sd = root / "noarch"
    sd.mkdir()
    (root / "linux-64").mkdir()
    (root / "linux-64" / "repodata.json").write_text(json.dumps({"info": {"subdir": "linux-64"}, "packages": {}}))
    paths = [make_conda(sd, name) for name in GOOD[:3]]
    paths.append(make_conda(sd, "escape", pkg_members=[file_member("../outside.txt", b"boo")]))
    trunc = make_conda(sd, "trunc", pkg_members=[file_member("share/big.bin", bytes(range(256)) * 400)])
    trunc.write_bytes(trunc.read_bytes()[:-300])
    paths.append(trunc)
    paths.append(make_conda(sd, "flipped"))
    paths += [make_conda(sd, name) for name in GOOD[3:]]
    repodata = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {p.name: _record(p) for p in paths}}
    (sd / "repodata.json").write_text(json.dumps(repodata))
    with StaticChannel(root) as chan:
        chan.corrupt.add("flipped-1.0-0.conda")
        yield chan


def test_bad_files_amid_a_batch_fail_with_their_own_codes_and_the_rest_lands(
    shared_server: Server, upstream: StaticChannel
) -> None:
    server = shared_server
    create_mirror(server, "batchy", upstream.url)
    run = run_mirror(server, "batchy")
    assert run["status"] == "completed", run
    c = run["counts"]
    assert c["downloaded"] == len(GOOD) and c["failed"] == 3 and c["rejected_checksum"] == 1
    codes = {f["file"]: f["code"] for f in run["failures"]}
    assert codes == {
        "noarch/escape-1.0-0.conda": "unsafe_path",
        "noarch/trunc-1.0-0.conda": "corrupt_archive",
        "noarch/flipped-1.0-0.conda": "checksum_mismatch",
    }
    served = repodata_files(server, "batchy")
    assert sorted(served) == sorted(f"{n}-1.0-0.conda" for n in GOOD)
    assert check_served_files(server, "batchy") == len(GOOD)
    with server.client() as cl:
        for fn, state in (("escape-1.0-0.conda", "failed"), ("good3-1.0-0.conda", "done")):
            (d,) = cl.get("/api/mirrors/batchy/explain", params={"q": fn}).json()["decisions"]
            assert d["state"] == state
        (d,) = cl.get("/api/mirrors/batchy/explain", params={"q": "trunc-1.0-0.conda"}).json()["decisions"]
        assert d["state"] == "failed" and "[corrupt_archive]" in d["error"]
    # a rerun fetches only what failed (and fails it again), not what landed
    hits = upstream.package_hits()
    again = run_mirror(server, "batchy", full=True)
    assert again["counts"].get("downloaded", 0) == 0 and again["counts"]["failed"] == 3
    assert upstream.package_hits() - hits == 3


def test_a_row_that_spoils_the_batch_transaction_fails_alone(shared_server: Server, tmp_path: Path) -> None:
    """Two files of one batch under the same name with other bytes: the batch's one transaction fails
    on the second row, so each row is written on its own: the first lands, the second is a conflict and
    leaves no blob; the bad archive between them keeps its own code."""
    server = shared_server
    server.channel("rowfail")
    ing = server.ctx.ingestor
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_conda(tmp_path / "a", "dup")
    other = make_conda(tmp_path / "b", "dup", index_extra={"license": "BSD-3-Clause"})
    bad = make_conda(tmp_path, "evil", pkg_members=[file_member("/etc/passwd", b"x")])
    fine = make_conda(tmp_path, "fine")
    assert first.name == other.name and first.read_bytes() != other.read_bytes()
    items = [IngestItem(ing.spool_file(p), p.name) for p in (first, bad, fine, other)]
    temps = [it.received.path for it in items]
    other_sha = items[3].received.sha256

    done = ing.ingest_many("rowfail", items, actor="test")

    assert [d.result.status if d.result else None for d in done] == ["created", None, "created", None]
    assert done[1].error is not None and done[1].error.code == "unsafe_path"  # type: ignore[attr-defined]
    assert done[3].error is not None and done[3].error.code == "filename_conflict"  # type: ignore[attr-defined]
    assert not server.ctx.blobs.exists(other_sha)
    assert all(t is not None and not t.exists() for t in temps)  # every temp file consumed
    server.ctx.settle()
    served = repodata_files(server, "rowfail")
    assert sorted(served) == ["dup-1.0-0.conda", "fine-1.0-0.conda"]
    assert served["dup-1.0-0.conda"]["sha256"] == done[0].result.sha256  # type: ignore[union-attr]


def test_the_sweep_leaves_a_held_channel_to_its_run(shared_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server = shared_server
    ctx = server.ctx
    server.channel("heldchan")
    with ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == "heldchan"))
    asked: list[tuple[int, str]] = []
    me = threading.get_ident()  # the server's own sweep runs too: count only what this thread's sweep asks

    def record(channel_id: int, subdir: str) -> None:
        if threading.get_ident() == me:
            asked.append((channel_id, subdir))

    monkeypatch.setattr(ctx, "request_index", record)
    ctx.db.run_write(lambda s: mark_dirty(s, cid, "noarch", None))
    with ctx.hold_index(cid):
        ctx.sweep()
        assert (cid, "noarch") not in asked
    ctx.sweep()
    assert (cid, "noarch") in asked


def test_a_mirror_lease_holds_its_channel_while_its_holder_lives(shared_server: Server) -> None:
    """The hook the mirror domain gives the sweep: channels of mirrors whose run lease is held by a live
    process (any process: ``mirror run --local`` runs beside the server)."""
    server = shared_server
    create_mirror(server, "leased", "/nonexistent-upstream")
    with server.ctx.db.session() as s:
        mirror = mirror_svc.get_mirror(s, "leased")
        mirror_id, cid = mirror.id, mirror.channel_id
    db = server.ctx.db
    holder = mirror_svc.new_holder()
    mirror_svc.acquire_lease(db, mirror_id, holder)
    try:
        assert cid in mirror_svc.running_channels(db)
        assert cid in server.ctx.held_channels()
    finally:
        mirror_svc.release_lease(db, mirror_id, holder)
    assert cid not in mirror_svc.running_channels(db)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{holder.split(':')[0]}:{gone.stdout.strip()}:x"
    mirror_svc.acquire_lease(db, mirror_id, dead)
    try:
        assert cid not in mirror_svc.running_channels(db)  # its process is gone: the sweep may index it
    finally:
        mirror_svc.release_lease(db, mirror_id, dead)
