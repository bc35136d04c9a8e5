"""The search index follows every change: uploads (searchable when the upload is answered), copies,
removals, privacy, channel deletion, mirror runs (active and passive), and a rebuild from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from condavault.search.models import SearchFile, SearchPackage
from tests.support.accounts import ok, wait_for
from tests.support.packages import file_member, make_conda
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel, create_mirror, run_mirror

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _search(srv: Server, q: str, token: str | None = None, **params: Any) -> dict[str, Any]:
    with srv.client(token) as c:
        r = c.get("/api/search", params={"q": q, **params})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _where(srv: Server, q: str, token: str | None = None) -> set[str]:
    return {r["channel"] for r in _search(srv, q, token, per_page=100)["results"]}


def test_search_follows_changes(server: Server, tmp_path: Path) -> None:
    srv = server
    srv.channel("up-a")
    srv.channel("up-b")
    pkg = make_conda(
        tmp_path,
        "fresh-gadget",
        "1.0",
        "0",
        pkg_members=[file_member("share/fresh-gadget/data.txt", b"x")],
        paths_json={
            "paths_version": 1,
            "paths": [{"_path": "share/fresh-gadget/data.txt", "path_type": "hardlink", "size_in_bytes": 1}],
        },
    )
    ok(srv.upload("up-a", pkg))
    # written in the upload's own transaction: searchable as soon as the upload is answered
    assert _where(srv, "fresh-gadget") == {"up-a"}
    assert _where(srv, "path:share/fresh-gadget/data.txt") == {"up-a"}
    admin = srv.admin_token
    with srv.client() as c:
        ok(c.post("/api/channels/up-a/files/copy", json={"files": [f"noarch/{pkg.name}"], "to": "up-b"}))
    wait_for(lambda: _where(srv, "fresh-gadget") == {"up-a", "up-b"})
    assert _where(srv, "path:share/fresh-gadget/data.txt") == {"up-a", "up-b"}  # files follow the bytes
    with srv.client() as c:
        ok(c.post("/api/channels/up-a/files/remove", json={"files": [f"noarch/{pkg.name}"]}))
    wait_for(lambda: _where(srv, "fresh-gadget") == {"up-b"})
    with srv.client() as c:
        ok(c.patch("/api/channels/up-b", json={"privacy": "private"}))
    assert _where(srv, "fresh-gadget") == set()  # anonymous: at once (permissions are checked per query)
    assert _search(srv, "fresh-gadgte")["suggestion"] is None
    assert _where(srv, "fresh-gadget", admin) == {"up-b"}
    with srv.client() as c:
        ok(c.delete("/api/channels/up-b"))
    assert _where(srv, "fresh-gadget", admin) == set()
    with srv.ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(SearchPackage)) == 0
    assert srv.ctx.domains.search.reindex()["orphans"] == 1  # the file list of bytes nobody has any more
    with srv.ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(SearchFile)) == 0


def test_mirrors_and_a_rebuild_from_scratch(server: Server, tmp_path: Path, packages_dir: Path) -> None:
    srv = server
    root = build_channel(packages_dir, tmp_path / "up", subdirs=("linux-64", "noarch"), names={"zlib", "dependency"})
    with StaticChannel(root) as upstream:
        create_mirror(srv, "mzp", upstream.url, mode="passive")
        assert run_mirror(srv, "mzp")["status"] == "completed"
        wait_for(lambda: _where(srv, "zlib") == {"mzp"})
        # file lists come from archives: a passive mirror has metadata only
        assert _where(srv, "path:lib/libz.so.1") == set()
        create_mirror(srv, "mz", upstream.url)
        assert run_mirror(srv, "mz")["status"] == "completed"
    wait_for(lambda: _where(srv, "zlib") == {"mz", "mzp"})
    assert _where(srv, "dependency >=2") == {"mz", "mzp"}
    # the active mirror downloaded the archives: their file lists hold for the same bytes everywhere
    assert _where(srv, "path:lib/libz.so.1") == {"mz", "mzp"}
    with srv.ctx.db.write_session() as s:  # an upgrade: records, and empty search tables
        s.execute(delete(SearchFile))
        s.execute(delete(SearchPackage))
    # the periodic sweep may restore the documents at any moment; file lists come back only by a reindex
    assert _where(srv, "path:lib/libz.so.1") == set()
    proc = srv.cli("search", "--reindex", "--wait")
    assert "documents" in proc.stdout, proc.stdout
    assert _where(srv, "zlib") == {"mz", "mzp"}
    assert _where(srv, "path:lib/libz.so.1") == {"mz", "mzp"}


def test_cli_search(server: Server, tmp_path: Path) -> None:
    srv = server
    srv.channel("cli-pub")
    ok(srv.upload("cli-pub", make_conda(tmp_path, "cli-widget", "2.0", "0")))
    proc = srv.cli("search", "cli-widgte")
    assert "cli-widget" in proc.stdout and "did you mean" in proc.stdout.lower()
    proc = srv.cli("search", "cli-widget", "--json")
    import json

    body = json.loads(proc.stdout)
    assert body["results"][0]["name"] == "cli-widget" and body["results"][0]["version"] == "2.0"
    proc = srv.cli("search", "sha256:nothex", check=False)
    assert proc.returncode != 0 and "64 hexadecimal" in proc.stderr
    proc = srv.cli("search", "--reindex", token=None, check=False)
    assert proc.returncode != 0
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/api/search", params={"q": "cli-widget", "channel": "nope"}).status_code in (401, 403, 404)


def _names(srv: Server, q: str) -> set[str]:
    return {r["name"] for r in _search(srv, q, per_page=100)["results"]}


def test_the_sweep_repairs_drift_but_leaves_a_channel_with_index_work_pending(server: Server, tmp_path: Path) -> None:
    """Documents lost (a crash, another writer) come back from the sweep; a channel whose records are not
    indexed yet is not synced by the sweep (a growing mirror would be read again and again) but by the
    sync after its index publish, for the names that publish changed."""
    from condavault.channels.models import Channel, Record
    from condavault.indexing.dirty import mark_dirty

    srv = server
    srv.channel("sw-a")
    for name in ("sweep-one", "sweep-two"):
        ok(srv.upload("sw-a", make_conda(tmp_path, name, "1.0", "0")))
    with srv.ctx.db.session() as s:
        cid = s.scalar(select(Channel.id).where(Channel.name == "sw-a"))
    dom = srv.ctx.domains.search

    def drop_documents() -> None:
        with srv.ctx.db.write_session() as s:
            s.execute(delete(SearchPackage).where(SearchPackage.channel_id == cid))

    drop_documents()
    # documents lost behind a process's back (a crash before its sync, an upgrade): a process started since
    # counts every channel once, a minute after its last check
    dom._in_order.clear()
    dom._documents_checked = float("-inf")
    wait_for(lambda: dom.sweep() is not None and _names(srv, "sweep") == {"sweep-one", "sweep-two"})

    # a record removed and not indexed yet: the sweep leaves the channel alone (its documents still count
    # the record); the index publish syncs the name it changed
    with srv.ctx.hold_index(cid):
        with srv.ctx.db.write_session() as s:
            s.execute(update(Record).where(Record.channel_id == cid, Record.name == "sweep-two").values(removed=True))
            mark_dirty(s, cid, "noarch", {"sweep-two"})
        dom._documents_checked = float("-inf")
        dom.sweep()
        assert _names(srv, "sweep") == {"sweep-one", "sweep-two"}
    srv.ctx.index_now(cid, ["noarch"])
    wait_for(lambda: _names(srv, "sweep") == {"sweep-one"})
