"""No database query and no hashing of upload bytes runs on the event loop (issue 11, finding 6): token
and channel lookups that miss their cache, raw, multipart and batch uploads, and the repo path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from condavault.packages import spool
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

PKG = ("noarch", "dependency-1.0-0.conda")
PKG2 = ("noarch", "dependency-2.0-0.conda")


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_no_database_or_hashing_on_the_event_loop(server: Server, packages_dir: Path, monkeypatch: Any) -> None:
    blocked: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _on_loop():
            blocked.append("SQL " + statement[:80])

    real_write, real_of_bytes = spool.Spool.write, spool.Received.of_bytes.__func__  # type: ignore[attr-defined]

    def write(self: spool.Spool, chunk: bytes) -> None:
        if _on_loop():
            blocked.append("hashing a spooled upload")
        real_write(self, chunk)

    def of_bytes(cls: type[spool.Received], data: bytes) -> spool.Received:
        if _on_loop():
            blocked.append("hashing an upload in memory")
        return real_of_bytes(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(spool.Spool, "write", write)
    monkeypatch.setattr(spool.Received, "of_bytes", classmethod(of_bytes))
    server.channel("loop", "private")
    with server.client() as c:
        token = c.post("/api/tokens", json={"scopes": [{"scope": "upload", "channels": ["loop"]}]}).json()["token"]
    event.listen(server.ctx.db.engine, "before_cursor_execute", before)
    try:
        server.ctx.auth.invalidate()
        server.ctx.channels.invalidate()
        # a raw upload with a token nobody has used yet (identity and channel: cache misses)
        assert server.upload("loop", packages_dir.joinpath(*PKG), token=token).status_code == 200
        server.ctx.auth.invalidate()
        server.ctx.channels.invalidate()
        with server.client(token) as c:
            pkg = packages_dir.joinpath(*PKG2)
            r = c.post("/api/channels/loop/files", files={"file": (pkg.name, pkg.read_bytes())})
            assert r.status_code == 200, r.text
            batch = c.post("/api/channels/loop/uploads").json()["id"]
            r = c.post(f"/api/channels/loop/uploads/{batch}/files", files=[("file", (pkg.name, pkg.read_bytes()))])
            assert r.status_code == 200, r.text
            assert c.post(f"/api/channels/loop/uploads/{batch}/commit").status_code == 200
        for form in ("header", "path"):
            server.ctx.auth.invalidate()
            server.ctx.channels.invalidate()
            server.ctx.lookup.invalidate()
            with server.client(token if form == "header" else None) as c:
                prefix = "" if form == "header" else f"t/{token}/"
                assert c.get(f"/api/repo/{prefix}loop/noarch/repodata.json").status_code == 200
                assert c.get(f"/api/repo/{prefix}loop/{PKG[0]}/{PKG[1]}").status_code == 200
        with server.client(None) as c:  # a bad token: 401, also looked up off the loop
            assert c.get("/api/repo/t/cv-unknown-token/loop/noarch/repodata.json").status_code == 401
    finally:
        event.remove(server.ctx.db.engine, "before_cursor_execute", before)
    assert blocked == [], f"blocking work on the event loop: {sorted(set(blocked))}"


def test_the_detector_sees_a_query_on_the_loop(tmp_path: Path) -> None:
    """The check above can fail: a query made inside a coroutine is seen."""
    from condavault.db.session import Database

    seen: list[str] = []
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append("x") if _on_loop() else None)

    async def query() -> None:
        db.ping()

    asyncio.run(query())
    n = len(seen)
    db.ping()
    assert n > 0 and len(seen) == n
    db.dispose()
