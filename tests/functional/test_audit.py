"""The audit log after a scripted session lists exactly the downloads that happened, by whom; the
queue is drained at shutdown; administrative changes carry who/what/before/after."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from condavault.audit.models import DownloadEvent
from tests.support.accounts import ok
from tests.support.server import Server, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

A = "noarch/dependency-1.0-0.conda"
B = "noarch/dependency-2.0-0.conda"


def _token(c: httpx.Client, user: str) -> str:
    ok(c.post("/api/users", json={"username": user}))
    r = c.post("/api/tokens", json={"user": user, "scopes": [{"scope": "read"}]})
    ok(r)
    return r.json()["token"]  # type: ignore[no-any-return]


def test_scripted_session_is_exported_exactly(shared_server: Server, packages_dir: Path) -> None:
    srv = shared_server
    srv.channel("au-priv", "private")
    srv.channel("au-pub", "public")
    for chan in ("au-priv", "au-pub"):
        for p in (A, B):
            ok(srv.upload(chan, packages_dir / p))
    with srv.client() as c:
        t1, t2 = _token(c, "au-one"), _token(c, "au-two")
        ok(c.post("/api/channels/au-priv/grants", json={"role": "viewer", "user": "au-one"}))
        ok(c.post("/api/channels/au-priv/grants", json={"role": "viewer", "user": "au-two"}))
    sha = {p: __import__("hashlib").sha256((packages_dir / p).read_bytes()).hexdigest() for p in (A, B)}
    expected = []
    with httpx.Client(base_url=srv.repo, headers={"User-Agent": "script/1"}) as c:
        for _ in range(2):
            ok(c.get(f"/t/{t1}/au-priv/{A}"), 200)
            expected.append(("au-one", "au-priv", A))
        ok(c.get(f"/au-priv/{B}", headers={"Authorization": f"Bearer {t2}"}), 200)
        expected.append(("au-two", "au-priv", B))
        ok(c.get(f"/au-pub/{A}"), 200)
        expected.append((None, "au-pub", A))
        # not downloads: HEAD, refusals, index files
        ok(c.head(f"/au-pub/{B}"), 200)
        assert c.get(f"/au-priv/{A}").status_code == 401
        ok(c.get("/au-pub/noarch/repodata.json"), 200)
    with srv.client() as c:
        rows = [
            r
            for r in c.get("/api/audit/downloads", params={"from": datetime.now(UTC).date().isoformat()}).json()
            if r["channel"] in ("au-priv", "au-pub")
        ]
        got = [(r["username"], r["channel"], f"{r['subdir']}/{r['filename']}") for r in rows]
        assert got == expected
        assert all(r["ip"] == "127.0.0.1" and r["user_agent"] == "script/1" for r in rows)
        assert [r["sha256"] for r in rows] == [sha[p] for _u, _c, p in expected]
        assert rows[0]["token_id"] is not None and rows[3]["token_id"] is None
        # filters
        by_user = c.get("/api/audit/downloads", params={"user": "au-two"}).json()
        assert [(r["username"], r["filename"]) for r in by_user] == [("au-two", Path(B).name)]
        anon = c.get("/api/audit/downloads", params={"user": "anonymous", "channel": "au-pub"}).json()
        assert len(anon) == 1
        pkg = c.get("/api/audit/downloads", params={"package": "dependency", "channel": "au-priv"}).json()
        assert len(pkg) == 3
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        assert c.get("/api/audit/downloads", params={"to": yesterday, "channel": "au-priv"}).json() == []
        # the same through the CLI, as CSV
    out = srv.cli("audit", "downloads", "--channel", "au-priv", "--format", "csv").stdout
    table = list(csv.DictReader(io.StringIO(out)))
    assert [(r["username"], r["filename"]) for r in table] == [
        ("au-one", Path(A).name),
        ("au-one", Path(A).name),
        ("au-two", Path(B).name),
    ]
    assert all(r["sha256"] in sha.values() for r in table)
    as_json = json.loads(srv.cli("audit", "downloads", "--user", "au-one", "--format", "json").stdout)
    assert len(as_json) == 2


def test_administrative_changes_are_recorded(shared_server: Server) -> None:
    srv = shared_server
    srv.channel("au-changes", "public")
    with srv.client() as c:
        ok(c.post("/api/users", json={"username": "au-changer"}))
        ok(c.patch("/api/channels/au-changes", json={"privacy": "private"}))
        ok(c.post("/api/channels/au-changes/grants", json={"role": "owner", "user": "au-changer"}))
        ok(c.patch("/api/users/au-changer", json={"disabled": True}))
        rows = c.get("/api/audit/changes", params={"channel": "au-changes"}).json()
        actions = [r["action"] for r in rows]
        assert actions == ["channel:create", "channel:update", "channel:grant"]
        upd = rows[1]
        assert upd["username"] == "admin" and upd["before"]["privacy"] == "public"
        assert upd["after"]["privacy"] == "private"
        user_rows = c.get("/api/audit/changes", params={"action": "user:update"}).json()
        last = [r for r in user_rows if r["target"] == "au-changer"][-1]
        assert last["before"]["disabled"] is False and last["after"]["disabled"] is True
    out = srv.cli("audit", "changes", "--action", "channel:grant", "--format", "csv").stdout
    assert "au-changes" in out and "au-changer" in out
    # audit:read is needed
    with srv.client(None) as anon:
        assert anon.get("/api/audit/changes").status_code == 401


def test_queue_is_drained_at_shutdown(tmp_path: Path, db_backend: str, packages_dir: Path) -> None:
    """1,000 downloads recorded while the writer sleeps are all written when the server stops."""
    srv, pg = start_server(tmp_path / "data", db_backend)
    try:
        srv.channel("au-drain", "public")
        ok(srv.upload("au-drain", packages_dir / A))
        rec = srv.ctx.domains.audit
        rec.interval = 3600.0  # the background writer sleeps from now on
        time.sleep(0.5)
        with httpx.Client(base_url=srv.repo) as c:
            for _ in range(1000):
                assert c.get(f"/au-drain/{A}").status_code == 200
        assert rec.pending >= 990
        srv.stop()  # uvicorn shutdown runs the lifespan: the queue is flushed
        with srv.ctx.db.session() as s:
            n = s.scalar(select(func.count()).select_from(DownloadEvent).where(DownloadEvent.channel == "au-drain"))
        assert n == 1000
    finally:
        stop_server(srv, pg)
