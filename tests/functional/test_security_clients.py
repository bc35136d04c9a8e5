"""Hostile clients against a real ``condavault serve`` (production logging): bounded bodies at every route,
stalled and trickling clients, refused requests whose connection is closed instead of drained, client
disconnects logged as what they are, forwarded headers trusted only from configured proxies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.hostile import abort_midway, chunked, endless, exchange, request_head
from tests.support.serve_process import ServeProcess, start_serve
from tests.support.server import start_server, stop_server

MiB = 1024 * 1024
PKG = "noarch/dependency-1.0-0.conda"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, db_backend: str, packages_dir: Path) -> Iterator[ServeProcess]:
    handle = start_serve(
        tmp_path_factory.mktemp("hostile") / "data",
        db_backend,
        body_timeout=2,
        header_timeout=2,
        min_upload_rate=4096,
        max_upload_bytes=20 * MiB,
        max_metadata_body_bytes=8 * MiB,
        login_max_failures_per_ip=3,
        login_max_failures=1000,
    )
    try:
        with handle.client() as c:
            ok(c.post("/api/channels", json={"name": "hc-pub"}))
            path = packages_dir / PKG
            ok(c.post("/api/channels/hc-pub/files", params={"filename": path.name}, content=path.read_bytes()))
            ok(c.post("/api/users", json={"username": "hc-out", "password": "outsider-pass"}))
            r = c.post("/api/tokens", json={"user": "hc-out", "scopes": [{"scope": "api"}]})
            ok(r)
            handle.env["outsider"] = r.json()["token"]
        yield handle
    finally:
        handle.stop()


def _routes(serve: ServeProcess) -> list[tuple[str, str]]:
    spec = httpx.get(f"{serve.url}/api/openapi.json").json()
    fill = {"name": "hc-nope", "subdir": "noarch", "filename": "x-1-0.conda", "username": "nobody-here"}
    out = [("GET", "/api/repo/hc-pub/noarch/repodata.json")]
    for path, ops in spec["paths"].items():
        for method in ops:
            concrete = path
            for key, value in fill.items():
                concrete = concrete.replace("{" + key + "}", value)
            while "{" in concrete:
                a, b = concrete.index("{"), concrete.index("}")
                concrete = concrete[:a] + "x" + concrete[b + 1 :]
            out.append((method.upper(), concrete))
    return out


def _temp_files(serve: ServeProcess, settle: float = 5.0) -> list[Path]:
    """Temp files left behind. The refusal goes out before the refused request's handler has removed its
    spool (on a worker thread), so wait a moment for that before calling what remains a leftover."""
    blobs = serve.data_dir / "blobs"
    deadline = time.monotonic() + settle
    while True:
        left = [*(blobs / ".tmp").glob("*"), *blobs.glob("??/??/.*.part"), *(serve.data_dir / "vulns").rglob("*.part")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_endless_bodies_are_cut_off_at_every_route(serve: ServeProcess, who: str) -> None:
    """Every route answers an endless body with a 4xx (or its normal answer if it ignores bodies) and
    closes the connection instead of reading on; nothing is left in the temp folders."""
    auth = {"Authorization": f"Bearer {serve.token}"} if who == "admin" else {}
    routes = _routes(serve)
    assert len(routes) > 60
    for method, path in routes:
        for ctype in ("application/json", "application/octet-stream"):
            head = request_head(method, path, {**auth, "Content-Type": ctype, "Transfer-Encoding": "chunked"})
            ex = exchange(serve.port, head, chunked(endless()), max_send_seconds=20)
            where = f"{method} {path} ({ctype}) as {who}"
            assert ex.status is not None and ex.status < 500, f"{where}: {ex.status} {ex.response[:300]!r}"
            assert ex.closed, f"{where}: the server kept the connection open"
            assert ex.seconds < 15, f"{where}: took {ex.seconds:.1f}s"
            assert ex.sent < 64 * MiB, f"{where}: the server read {ex.sent} bytes"
            if ex.status in (408, 413):
                assert ex.header("connection") == "close"
    assert not _temp_files(serve)


def test_declared_length_over_the_limit_is_refused_unread(serve: ServeProcess) -> None:
    auth = {"Authorization": f"Bearer {serve.token}"}
    for path, limit_headers in (
        ("/api/auth/login", {"Content-Type": "application/json", "Content-Length": str(2**30)}),
        ("/api/channels/hc-pub/files?filename=big-1-0.conda", {**auth, "Content-Length": str(10 * 2**30)}),
        (
            "/api/channels/hc-pub/subdirs/noarch/import",
            {**auth, "Content-Type": "application/json", "Content-Length": str(9 * MiB)},
        ),
    ):
        ex = exchange(serve.port, request_head("POST", path, limit_headers), endless())
        assert ex.status == 413, (path, ex.response[:300])
        assert b'"payload_too_large"' in ex.response and ex.closed
        assert ex.seconds < 5


def test_an_upload_over_the_limit_stops_and_leaves_nothing(serve: ServeProcess) -> None:
    head = request_head(
        "POST",
        "/api/channels/hc-pub/files?filename=big-1-0.conda",
        {"Authorization": f"Bearer {serve.token}", "Transfer-Encoding": "chunked"},
    )
    ex = exchange(serve.port, head, chunked(endless()))
    assert ex.status == 413 and ex.closed
    assert 20 * MiB <= ex.sent < 80 * MiB
    assert not _temp_files(serve)


def test_large_bodies_are_read_only_after_the_permission_check(serve: ServeProcess) -> None:
    for token, status in ((None, 401), (serve.env["outsider"], 403)):
        headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for method, path in (
            ("POST", "/api/channels/hc-pub/subdirs/noarch/import"),
            ("PUT", "/api/channels/hc-pub/subdirs/noarch/patch-instructions"),
            ("POST", "/api/channels/hc-pub/files?filename=a-1-0.conda"),
            ("POST", "/api/cves/sync"),
        ):
            ctype = "application/octet-stream" if path.endswith(("conda", "sync")) else "application/json"
            ex = exchange(
                serve.port, request_head(method, path, {**headers, "Content-Type": ctype}), chunked(endless())
            )
            assert ex.status == status, (method, path, ex.response[:300])
            assert ex.closed and ex.seconds < 5


def test_stalled_and_trickling_clients_are_dropped(serve: ServeProcess) -> None:
    # a small body trickling in: the whole of it must arrive within body_timeout
    head = request_head("POST", "/api/auth/login", {"Content-Type": "application/json", "Content-Length": "200"})
    ex = exchange(serve.port, head, (b"x" for _ in range(200)), delay=0.3)
    assert ex.status == 408 and ex.closed and b"request_timeout" in ex.response
    assert ex.seconds < 6
    # an upload averaging less than min_upload_rate over a body_timeout window
    head = request_head(
        "POST",
        "/api/channels/hc-pub/files?filename=slow-1-0.conda",
        {"Authorization": f"Bearer {serve.token}", "Content-Length": str(MiB)},
    )
    ex = exchange(serve.port, head, (b"x" * 200 for _ in range(1000)), delay=0.2)
    assert ex.status == 408 and ex.closed
    assert ex.seconds < 8
    # headers trickling in, one line at a time
    ex = exchange(serve.port, b"GET /healthz HTTP/1.1\r\n", (b"X-Slow: 1\r\n" for _ in range(100)), delay=0.5)
    assert ex.status == 408 and ex.closed and ex.seconds < 5
    # a connection that never says anything
    ex = exchange(serve.port, b"")
    assert ex.closed and ex.seconds < 5
    # endless headers
    ex = exchange(serve.port, b"GET /healthz HTTP/1.1\r\n", (b"X-Big: " + b"y" * 4000 + b"\r\n" for _ in range(10**4)))
    assert ex.status == 431 and ex.closed
    assert not _temp_files(serve)


def test_normal_clients_are_served_while_hostile_ones_stream(serve: ServeProcess) -> None:
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            head = request_head(
                "POST", "/api/auth/login", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
            )
            exchange(serve.port, head, chunked(endless()), max_send_seconds=5)

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as c:
            for _ in range(20):
                started = time.monotonic()
                assert c.get(f"/api/repo/hc-pub/{PKG.split('/')[0]}/repodata.json").status_code == 200
                assert c.get("/api/channels").status_code == 200
                assert time.monotonic() - started < 5
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def test_client_disconnects_are_logged_without_tracebacks(serve: ServeProcess, packages_dir: Path) -> None:
    before = len(serve.logs())
    head = request_head(
        "POST",
        "/api/channels/hc-pub/files?filename=gone-1-0.conda",
        {"Authorization": f"Bearer {serve.token}", "Content-Length": str(10 * MiB)},
    )
    abort_midway(serve.port, head, b"x" * MiB)
    biggest = max((p for p in packages_dir.rglob("*.conda")), key=lambda p: p.stat().st_size)
    with serve.client() as c:
        ok(c.post("/api/channels/hc-pub/files", params={"filename": biggest.name}, content=biggest.read_bytes()))
    abort_midway(serve.port, request_head("GET", f"/api/repo/hc-pub/{biggest.parent.name}/{biggest.name}"), b"")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = serve.logs()[before:]
        if any("disconnected" in str(r.get("msg", "")) for r in new):
            break
        time.sleep(0.2)
    new = serve.logs()[before:]
    assert any("disconnected" in str(r.get("msg", "")) and r.get("level") == "info" for r in new), new
    assert not [r for r in new if r.get("level") in ("error", "critical") or "Traceback" in str(r)], new
    assert not _temp_files(serve)


def test_forwarded_headers_are_ignored_unless_the_proxy_is_configured(
    serve: ServeProcess, tmp_path: Path, db_backend: str
) -> None:
    # default: X-Forwarded-For from a local process is not trusted, so throttling counts the real peer
    statuses = []
    with httpx.Client(base_url=serve.url) as c:
        for i in range(5):
            r = c.post(
                "/api/auth/login",
                json={"username": f"nobody{i}", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"203.0.113.{i}", "X-Forwarded-Proto": "https"},
            )
            statuses.append(r.status_code)
            assert "Secure" not in r.headers.get("set-cookie", "")
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429], statuses
    # behind a configured proxy: its X-Forwarded-For is the client, X-Forwarded-Proto makes cookies Secure
    srv, pg = start_server(
        tmp_path / "proxied", db_backend, forwarded_allow_ips=["127.0.0.1"], login_max_failures_per_ip=3
    )
    try:
        with srv.client() as c:
            ok(c.post("/api/users", json={"username": "hc-erin", "password": "erin-password-1"}))
        with httpx.Client(base_url=srv.url) as c:
            for i in range(5):
                r = c.post(
                    "/api/auth/login",
                    json={"username": f"nobody{i}", "password": "wrong-password"},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
                assert r.status_code == 401
            r = c.post(
                "/api/auth/login",
                json={"username": "hc-erin", "password": "erin-password-1"},
                headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.99"},
            )
            assert any(h.startswith("condavault_session=") and "Secure" in h for h in r.headers.get_list("set-cookie"))
    finally:
        stop_server(srv, pg)


def test_data_folder_and_database_are_private(serve: ServeProcess) -> None:
    assert serve.data_dir.stat().st_mode & 0o777 == 0o700
    if serve.db_url is None:
        for name in ("condavault.db", "condavault.db-wal", "condavault.db-shm"):
            path = serve.data_dir / name
            if path.exists():
                assert path.stat().st_mode & 0o077 == 0, name
