"""Issue 15: index files at scale -- superseded index blobs collected by the server itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from condavault.channels.models import Channel, Record
from condavault.indexing import buckets, garbage
from condavault.indexing.dirty import mark_dirty
from condavault.indexing.models import PublishedFile, ShardBlob, ShardHead, SupersededBlob
from tests.support.accounts import wait_for
from tests.support.packages import file_member, make_conda
from tests.support.server import Server, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def gc_server(tmp_path: Path, db_backend: str) -> Iterator[Server]:
    # index files may be cached 0 s by clients: the retention is its floor (max-age + 5 s)
    srv, pg = start_server(tmp_path / "srv", db_backend, index_max_age=0, index_retention_seconds=0)
    try:
        yield srv
    finally:
        stop_server(srv, pg)


def _published(srv: Server, channel: str) -> dict[tuple[str, str], str]:
    """Each published path's blob: its own, or the .zst blob a plain JSON file is served from."""
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == channel))
        blob = func.coalesce(PublishedFile.source_sha256, PublishedFile.sha256)
        return {
            (sd, p): h
            for sd, p, h in s.execute(
                select(PublishedFile.subdir, PublishedFile.path, blob).where(PublishedFile.channel_id == cid)
            )
        }


def _lists(srv: Server, channel: str, fn: str) -> bool:
    with srv.client(None) as c:
        for path in ("repodata.json", "current_repodata.json"):
            r = c.get(f"/api/repo/{channel}/noarch/{path}")
            if r.status_code != 200 or fn not in r.json()["packages.conda"]:
                return False
    return True


def test_superseded_index_blobs_are_collected_after_the_retention(gc_server: Server, tmp_path: Path) -> None:
    srv = gc_server
    srv.channel("gc")
    a = make_conda(tmp_path, "alpha", "1.0")
    assert srv.upload("gc", a).status_code == 200
    wait_for(lambda: _lists(srv, "gc", a.name))
    srv.ctx.settle()  # and the slow lane's channeldata.json (current_repodata.json comes with repodata.json)
    first = _published(srv, "gc")
    b = make_conda(tmp_path, "beta", "1.0")
    assert srv.upload("gc", b).status_code == 200
    wait_for(lambda: _lists(srv, "gc", b.name))
    srv.ctx.settle()
    second = _published(srv, "gc")
    superseded = {h for key, h in first.items() if second.get(key) != h} - set(second.values())
    assert {k[1] for k in first if second.get(k) != first[k]} >= {
        "repodata.json",
        "repodata.json.zst",
        "current_repodata.json",
    }
    assert superseded and all(srv.ctx.blobs.exists(h) for h in superseded)

    # within the retention nothing is collected (a run with an hour's retention deletes nothing)
    longer = srv.settings.model_copy(update={"index_retention_seconds": 3600})
    assert garbage.collect_superseded(srv.ctx.db, srv.ctx.ingestor.guard, longer) == (0, 0)
    assert all(srv.ctx.blobs.exists(h) for h in superseded)

    # the server's own schedule collects them after the retention; current files stay and are served
    wait_for(lambda: not any(srv.ctx.blobs.exists(h) for h in superseded), timeout=60)
    assert _published(srv, "gc") == second
    assert all(srv.ctx.blobs.exists(h) for h in second.values())
    with srv.client(None) as c:
        for (sd, path), _h in second.items():
            prefix = f"/api/repo/gc/{sd}/" if sd else "/api/repo/gc/"
            assert c.get(prefix + path).status_code == 200, path
    with srv.ctx.db.session() as s:
        assert not set(s.scalars(select(SupersededBlob.sha256))) & superseded


def test_a_blob_published_again_is_kept_and_expired_shards_are_collected(gc_server: Server, tmp_path: Path) -> None:
    srv = gc_server
    srv.channel("gc2")
    for v in ("1.0", "2.0"):
        assert srv.upload("gc2", make_conda(tmp_path, "gamma", v)).status_code == 200
    wait_for(lambda: _lists(srv, "gc2", "gamma-2.0-0.conda"))
    current = _published(srv, "gc2")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    # a note about a blob that is current again (the same bytes published anew): the blob stays
    repodata = current[("noarch", "repodata.json")]
    srv.ctx.db.run_write(lambda s: garbage.record(s, [repodata], at=long_ago))
    with srv.ctx.db.session() as s:
        shards = {n: h for n, h in s.execute(select(ShardHead.name, ShardHead.sha256))}
        old_shards = set(s.scalars(select(ShardBlob.sha256).where(ShardBlob.superseded_at.is_not(None))))
    assert old_shards and not old_shards & set(shards.values())  # gamma 1.0's shard was superseded by 2.0's
    assert all(srv.ctx.blobs.exists(h) for h in old_shards)
    # superseded shards stay shard_retention_days (clients cache shard indexes); then they go too
    srv.ctx.db.run_write(
        lambda s: s.execute(
            update(ShardBlob).where(ShardBlob.superseded_at.is_not(None)).values(superseded_at=long_ago)
        )
    )
    for h in old_shards:  # and their files are as old (a blob's mtime is when it was last written or relied on)
        os.utime(srv.ctx.blobs.path(h), (long_ago.timestamp(), long_ago.timestamp()))
    assert srv.ctx.indexer.expire_old_shards() == len(old_shards)
    deleted, waiting = garbage.collect_superseded(srv.ctx.db, srv.ctx.ingestor.guard, srv.settings)
    assert deleted >= len(old_shards) and waiting == 0
    assert not any(srv.ctx.blobs.exists(h) for h in old_shards)
    assert srv.ctx.blobs.exists(repodata) and all(srv.ctx.blobs.exists(h) for h in shards.values())
    with srv.ctx.db.session() as s:
        assert repodata not in set(s.scalars(select(SupersededBlob.sha256)))


def test_a_deleted_channels_index_files_are_collected_too(gc_server: Server, tmp_path: Path) -> None:
    srv = gc_server
    srv.channel("gone")
    pkg = make_conda(tmp_path, "gone", "1.0")
    assert srv.upload("gone", pkg).status_code == 200
    wait_for(lambda: _lists(srv, "gone", pkg.name))
    published = set(_published(srv, "gone").values())
    with srv.ctx.db.session() as s:
        shards = set(s.scalars(select(ShardHead.sha256)))
    with srv.client() as c:
        assert c.delete("/api/channels/gone").status_code in (200, 204)
    wait_for(lambda: not any(srv.ctx.blobs.exists(h) for h in published | shards), timeout=60)
    assert srv.ctx.blobs.exists(hashlib.sha256(pkg.read_bytes()).hexdigest())  # package bytes: check --repair's


def _records(n: int, start: int = 0, name: str = "imp") -> dict[str, dict[str, object]]:
    return {
        f"{name}{i % 50}-1.{i}-0.conda": {
            "name": f"{name}{i % 50}",
            "version": f"1.{i}",
            "build": "0",
            "build_number": 0,
            "depends": [],
            "subdir": "noarch",
            "sha256": f"{i:064x}",
            "md5": f"{i:032x}",
            "size": 100 + i,
        }
        for i in range(start, start + n)
    }


def test_a_streamed_import_is_all_or_nothing_and_chunks_index_what_they_add(shared_server: Server) -> None:
    srv = shared_server
    srv.channel("stream-imp")
    url = "/api/channels/stream-imp/subdirs/noarch/import"
    body = json.dumps({"info": {"subdir": "noarch"}, "packages.conda": _records(4500)}).encode()
    with srv.client() as c:
        # broken after more than two insert batches: 400, and not one record was kept
        for bad in (body[:-2] + b"x}", body[: len(body) // 2], body + b"[]"):
            r = c.post(url, content=bad, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_repodata", r.text
        assert c.get("/api/repo/stream-imp/noarch/repodata.json").json()["packages.conda"] == {}
        # a raw body, streamed: every record, in chunks that each index only what they add
        assert c.post(url, content=body).json()["created"] == 4500
        second = json.dumps({"packages.conda": {**_records(100, 4400), **_records(500, 0, "more")}}).encode()
        assert c.post(url, content=iter([second[:1000], second[1000:]])).json() == {
            "created": 500,
            "unchanged": 100,
            "replaced": 0,
            "invalid": 0,
        }
        listed = c.get("/api/repo/stream-imp/noarch/repodata.json").json()["packages.conda"]
    assert len(listed) == 5000
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == "stream-imp"))
    stats = srv.ctx.indexer.last_run[(cid, "noarch")]
    assert not stats.full and stats.names_changed == 50 and stats.rows_read == 500


def test_behind_nginx_blobs_are_handed_over_with_x_accel_redirect(tmp_path: Path, db_backend: str) -> None:
    srv, pg = start_server(tmp_path / "srv", db_backend, x_accel_redirect_prefix="/_blobs/")
    try:
        srv.channel("xa")
        srv.channel("xa-private", privacy="private")
        pkg = make_conda(tmp_path, "xa", "1.0")
        assert srv.upload("xa", pkg).status_code == 200
        assert srv.upload("xa-private", pkg).status_code == 200
        sha = hashlib.sha256(pkg.read_bytes()).hexdigest()
        with srv.client(None) as c:
            r = c.get(f"/api/repo/xa/noarch/{pkg.name}")
            assert r.status_code == 200 and r.content == b""
            assert r.headers["x-accel-redirect"] == f"/_blobs/{sha[:2]}/{sha[2:4]}/{sha}"
            assert r.headers["etag"] == f'"{sha}"' and r.headers["content-type"] == "application/octet-stream"
            assert srv.ctx.blobs.path(sha).is_file()  # what the internal location aliases
            # index files too; a 304 stays a 304; a private channel hands nothing over to a stranger
            r = c.get("/api/repo/xa/noarch/repodata.json.zst")
            assert r.status_code == 200 and "x-accel-redirect" in r.headers
            again = c.get("/api/repo/xa/noarch/repodata.json.zst", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and "x-accel-redirect" not in again.headers
            assert again.headers["cache-control"] == "public, max-age=30"
            # the plain JSON has no file of its own: it is decompressed from the .zst as it is sent
            plain = c.get("/api/repo/xa/noarch/repodata.json")
            assert plain.status_code == 200 and "x-accel-redirect" not in plain.headers
            assert pkg.name in plain.json()["packages.conda"]
            zst_sha = r.headers["etag"].strip('"')  # the .zst's ETag is its sha256
            assert plain.headers["etag"] == f'"{buckets.plain_id(zst_sha)}"'
            again = c.get("/api/repo/xa/noarch/repodata.json", headers={"If-None-Match": plain.headers["etag"]})
            assert again.status_code == 304
            hidden = c.get(f"/api/repo/xa-private/noarch/{pkg.name}")
            assert hidden.status_code in (401, 404) and "x-accel-redirect" not in hidden.headers
        with srv.client() as c:
            assert "x-accel-redirect" in c.get(f"/api/repo/xa-private/noarch/{pkg.name}").headers
    finally:
        stop_server(srv, pg)


def test_shards_are_served_from_memory_after_the_first_read_and_never_damaged(
    shared_server: Server, tmp_path: Path
) -> None:
    srv = shared_server
    srv.channel("hot-shards")
    srv.channel("hot-other")
    for name in ("hot", "cold"):
        assert srv.upload("hot-shards", make_conda(tmp_path, name, "1.0")).status_code == 200
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == "hot-shards"))
        heads = dict(s.execute(select(ShardHead.name, ShardHead.sha256).where(ShardHead.channel_id == cid)).all())
    hot, cold = heads["hot"], heads["cold"]
    url = "/api/repo/hot-shards/noarch/shards/{}.msgpack.zst"
    with srv.client(None) as c:
        first = c.get(url.format(hot))
        assert first.status_code == 200 and hashlib.sha256(first.content).hexdigest() == hot
        again = c.get(url.format(hot))
        assert again.content == first.content and again.headers["etag"] == f'"{hot}"'
        assert again.headers["content-type"] == "application/octet-stream"
        assert again.headers["cache-control"] == "public, max-age=31536000, immutable"
        head = c.head(url.format(hot))
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(first.content))
        # a shard damaged on disk is never served (nor kept in memory)
        path = srv.ctx.blobs.path(cold)
        path.write_bytes(b"\0" + path.read_bytes()[1:])
        damaged = c.get(url.format(cold))
        assert damaged.status_code == 404 and damaged.json()["error"]["code"] == "blob_missing"
        # another channel's shard is not served through this one, cached or not
        assert c.get(f"/api/repo/hot-other/noarch/shards/{hot}.msgpack.zst").status_code == 404


def test_channeldata_is_kept_up_to_date_name_by_name_and_equals_a_full_rebuild(
    shared_server: Server, tmp_path: Path
) -> None:
    """The slow lane rebuilds only the entries of the names an index run changed, spliced into the file it
    published last; each result is byte for byte what a rebuild from every record gives, and a run that
    cannot know what changed (another process indexed the channel) rebuilds in full."""
    from condavault.indexing.indexer import Indexer

    srv = shared_server
    srv.channel("cd-inc")
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == "cd-inc"))
    run_exports = {"weak": ["libzeta >=1"]}
    files = [
        make_conda(tmp_path, "alpha", "1.0", "0", "linux-64", index_extra={"license": "MIT"}),
        make_conda(tmp_path, "alpha", "1.0", "0", "osx-64", index_extra={"license": "MIT"}),
        make_conda(tmp_path, "beta", "2.0", "0", index_extra={"license": "BSD-3-Clause"}),
        make_conda(
            tmp_path,
            "zeta",
            "0.1",
            "0",
            "linux-64",
            info_extra=[file_member("info/run_exports.json", json.dumps(run_exports).encode())],
        ),
        make_conda(tmp_path, "we.ird_name-x", "1!3.0", "py_0"),
    ]
    for f in files:
        assert srv.upload("cd-inc", f).status_code == 200
    srv.ctx.settle()

    def served() -> bytes:
        with srv.client(None) as c:
            r = c.get("/api/repo/cd-inc/channeldata.json")
            assert r.status_code == 200
            return r.content

    def check(*, full: bool, names: int = -1) -> dict:
        srv.ctx.settle()
        run = srv.ctx.indexer.last_extras[cid]
        assert run.full is full, run
        if not full:
            assert run.names == names, run
        got = served()
        srv.ctx.indexer.publish_extras(cid, full=True)  # the reference: every record read
        assert srv.ctx.indexer.last_extras[cid].reason == "asked"
        assert served() == got
        return json.loads(got)["packages"]

    # a first run of this process is a full one; the next uploads change one name each
    srv.ctx.indexer.channeldata.forget(cid)
    srv.ctx.indexer.publish_extras(cid)
    assert srv.ctx.indexer.last_extras[cid].reason == "no chain"
    assert srv.upload("cd-inc", make_conda(tmp_path, "alpha", "1.1", "0", "linux-64")).status_code == 200
    doc = check(full=False, names=1)
    assert doc["alpha"]["version"] == "1.1" and doc["alpha"]["subdirs"] == ["linux-64", "osx-64"]
    assert doc["zeta"]["run_exports"] == {"0.1": run_exports}
    assert srv.upload("cd-inc", make_conda(tmp_path, "gamma", "0.5", "0")).status_code == 200
    assert "gamma" in check(full=False, names=1)

    # a name whose last file is removed loses its entry; another name's file removed in one subdir
    with srv.client() as c:
        r = c.post("/api/channels/cd-inc/files/remove", json={"files": ["noarch/beta-2.0-0.conda"]})
        assert r.status_code == 200, r.text
        r = c.post("/api/channels/cd-inc/files/remove", json={"files": ["osx-64/alpha-1.0-0.conda"]})
        assert r.status_code == 200, r.text
    doc = check(full=False, names=2)
    assert "beta" not in doc and doc["alpha"]["subdirs"] == ["linux-64"]

    # another process changes and indexes the channel (here: its writes made directly, and an indexer of its
    # own): those changes are not known here, so the next run reads everything
    other = Indexer(srv.ctx.settings, srv.ctx.db, srv.ctx.blobs)
    try:
        with srv.ctx.hold_index(cid):
            with srv.ctx.db.write_session() as s:
                s.execute(update(Record).where(Record.channel_id == cid, Record.name == "gamma").values(removed=True))
                mark_dirty(s, cid, "noarch", {"gamma"})
            assert other.index_subdir(cid, "noarch")
        srv.ctx.indexer.publish_extras(cid)
        assert srv.ctx.indexer.last_extras[cid].reason == "indexed elsewhere"
        assert "gamma" not in json.loads(served())["packages"]
        assert srv.upload("cd-inc", make_conda(tmp_path, "delta", "1.0", "0")).status_code == 200
        assert "delta" in check(full=False, names=1)  # and the chain goes on from the full run
    finally:
        for st in other._state.values():
            st.store.destroy()
