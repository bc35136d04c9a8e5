"""No privilege escalation: nobody hands out permissions they lack (roles, group memberships, another
account's token or password); server-side paths as upstreams only for system administrators; mirror and
CVE upstreams checked against the outbound URL policy when configured and at every connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel

PASSWORD = "escalation-pass"


@pytest.fixture(scope="module")
def world(
    shared_server: Server, packages_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    srv = shared_server
    tokens: dict[str, str] = {}
    with srv.client() as c:
        for user in ("es-author", "es-friend", "es-usermgr", "es-boss", "es-mirrorer", "es-plain"):
            ok(c.post("/api/users", json={"username": user, "password": PASSWORD}))
            r = c.post("/api/tokens", json={"user": user, "scopes": [{"scope": "api"}]})
            ok(r)
            tokens[user] = r.json()["token"]
        ok(c.post("/api/grants", json={"role": "author", "user": "es-author"}))
        ok(c.post("/api/roles", json={"name": "es-usermgr", "permissions": ["user:manage"]}))
        ok(c.post("/api/grants", json={"role": "es-usermgr", "user": "es-usermgr"}))
        ok(c.post("/api/roles", json={"name": "es-mirror", "permissions": ["mirror:manage"]}))
        ok(c.post("/api/groups", json={"name": "es-admins"}))
        ok(c.post("/api/grants", json={"role": "admin", "group": "es-admins"}))
        ok(c.post("/api/grants", json={"role": "es-mirror", "user": "es-boss"}))
        ok(c.post("/api/channels", json={"name": "es-mirrored"}))
        ok(c.post("/api/channels/es-mirrored/grants", json={"role": "owner", "user": "es-mirrorer"}))
        ok(c.post("/api/channels/es-mirrored/grants", json={"role": "es-mirror", "user": "es-mirrorer"}))
    root = build_channel(
        packages_dir, tmp_path_factory.mktemp("es-upstream"), subdirs=("noarch",), names={"dependency"}
    )
    with StaticChannel(root) as upstream:
        yield {"srv": srv, "tokens": tokens, "upstream": upstream, "root": root}


def _as(world: dict[str, Any], user: str) -> httpx.Client:
    return httpx.Client(
        base_url=world["srv"].url, headers={"Authorization": f"Bearer {world['tokens'][user]}"}, timeout=60
    )


def test_a_channel_owner_cannot_grant_roles_beyond_his_own(world: dict[str, Any]) -> None:
    with _as(world, "es-author") as c:
        ok(c.post("/api/channels", json={"name": "es-own", "privacy": "public"}))
        r = c.post("/api/channels/es-own/grants", json={"role": "admin", "user": "es-author"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "delegation_denied", r.text
        assert "mirror:manage" in r.text
        r = c.post("/api/channels/es-own/grants", json={"role": "admin", "user": "es-friend"})
        assert r.status_code == 403
        r = c.post("/api/channels/es-own/grants", json={"role": "es-mirror", "user": "es-friend"})
        assert r.status_code == 403
        ok(c.post("/api/channels/es-own/grants", json={"role": "owner", "user": "es-friend"}))  # what he holds
        ok(c.delete("/api/channels/es-own/grants", params={"role": "owner", "user": "es-friend"}))
        assert c.get("/api/whoami").json()["is_admin"] is False
    with world["srv"].client() as admin:  # an admin's grant on his channel he cannot take back either
        ok(admin.post("/api/channels/es-own/grants", json={"role": "es-mirror", "user": "es-friend"}))
    with _as(world, "es-author") as c:
        r = c.delete("/api/channels/es-own/grants", params={"role": "es-mirror", "user": "es-friend"})
        assert r.status_code == 403
        # and with mirror:manage out of reach, he cannot mirror anything into his channel
        r = c.post(
            "/api/mirrors",
            json={"name": "es-own-m", "upstream": world["upstream"].url, "channel": "es-own", "subdirs": ["noarch"]},
        )
        assert r.status_code == 403


def test_a_user_manager_cannot_reach_administrators_through_groups_tokens_or_passwords(world: dict[str, Any]) -> None:
    with _as(world, "es-usermgr") as c:
        r = c.put("/api/groups/es-admins/members/es-usermgr")
        assert r.status_code == 403 and r.json()["error"]["code"] == "delegation_denied", r.text
        r = c.put("/api/groups/es-admins/members/es-friend")
        assert r.status_code == 403
        # es-boss holds mirror:manage, which the user manager does not: no token, no password reset
        r = c.post("/api/tokens", json={"user": "es-boss", "scopes": [{"scope": "api"}]})
        assert r.status_code == 403
        r = c.post("/api/users/es-boss/password", json={"password": "taken-over-1"})
        assert r.status_code == 403
        # plain accounts stay his to manage
        ok(c.post("/api/tokens", json={"user": "es-plain", "scopes": [{"scope": "read"}]}))
        ok(c.post("/api/users/es-plain/password", json={"password": "reset-by-manager-1"}))
    with world["srv"].client() as c:
        members = c.get("/api/groups/es-admins").json()["members"]
        assert members == []


def test_server_side_paths_as_upstreams_need_a_system_administrator(world: dict[str, Any], tmp_path: Path) -> None:
    local = str(world["root"])
    with _as(world, "es-mirrorer") as c:
        for upstream in (local, f"file://{local}", "/etc", "file:///"):
            r = c.post(
                "/api/mirrors",
                json={"name": "es-disk", "upstream": upstream, "channel": "es-mirrored", "subdirs": ["noarch"]},
            )
            assert r.status_code == 403, (upstream, r.text)
        # a URL upstream is his to configure
        ok(
            c.post(
                "/api/mirrors",
                json={
                    "name": "es-url",
                    "upstream": world["upstream"].url,
                    "channel": "es-mirrored",
                    "subdirs": ["noarch"],
                },
            )
        )
    with world["srv"].client() as c:
        ok(
            c.post(
                "/api/mirrors",
                json={"name": "es-disk", "upstream": local, "channel": "es-mirrored", "subdirs": ["noarch"]},
            )
        )
        ok(c.delete("/api/mirrors/es-disk"))


@contextmanager
def _loopback_refused(srv: Server) -> Iterator[None]:
    srv.settings.upstream_allow_loopback = False  # the production default (tests allow loopback upstreams)
    try:
        yield
    finally:
        srv.settings.upstream_allow_loopback = True


def test_upstream_urls_are_checked_when_configured(world: dict[str, Any]) -> None:
    srv = world["srv"]
    port = world["upstream"].port
    refused = [
        "http://169.254.169.254/latest",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/x",
        "http://2852039166/",
        "http://0.0.0.0:80/",
        f"http://127.0.0.1:{port}",
        f"http://localhost:{port}",
        f"http://[::ffff:127.0.0.1]:{port}/",
    ]
    with _loopback_refused(srv), srv.client() as c:
        for upstream in refused:
            r = c.post(
                "/api/mirrors",
                json={"name": "es-ssrf", "upstream": upstream, "channel": "es-mirrored", "subdirs": ["noarch"]},
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_not_allowed", (upstream, r.text)
        r = c.post(
            "/api/mirrors",
            json={
                "name": "es-ssrf",
                "upstream": "https://conda.example.org/c",
                "proxy": "http://169.254.169.254:3128",
                "channel": "es-mirrored",
                "subdirs": ["noarch"],
            },
        )
        assert r.status_code == 400 and "proxy" in r.json()["error"]["message"]
        r = c.post("/api/cves/sync", json={"sources": ["http://169.254.169.254/latest/feed.json"]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_not_allowed", r.text
        r = c.post("/api/cves/sync", json={"sources": [f"http://localhost:{port}/feed.json"]})
        assert r.status_code == 400
    with srv.client() as c:  # with the administrator's allowance, loopback is fine (but metadata never is)
        ok(
            c.post(
                "/api/mirrors",
                json={
                    "name": "es-loop",
                    "upstream": f"http://127.0.0.1:{port}",
                    "channel": "es-mirrored",
                    "subdirs": ["noarch"],
                },
            )
        )
        r = c.post(
            "/api/mirrors",
            json={
                "name": "es-meta",
                "upstream": "http://169.254.169.254/",
                "channel": "es-mirrored",
                "subdirs": ["noarch"],
            },
        )
        assert r.status_code == 400


class _Redirect(BaseHTTPRequestHandler):
    target = "http://169.254.169.254/latest/meta-data/"

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target + self.path.lstrip("/"))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_connections_are_checked_after_redirects_and_dns(world: dict[str, Any]) -> None:
    srv = world["srv"]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with srv.client() as c:
            redirector = f"http://127.0.0.1:{httpd.server_address[1]}"
            ok(
                c.post(
                    "/api/mirrors",
                    json={
                        "name": "es-redirect",
                        "upstream": redirector,
                        "channel": "es-mirrored",
                        "subdirs": ["noarch"],
                    },
                )
            )
            run = c.post("/api/mirrors/es-redirect/runs", params={"wait": True}).json()
            assert run["status"] == "failed" and "not allowed" in (run["error"] or ""), run
            r = c.post("/api/cves/sync", json={"sources": [f"{redirector}/feed.json"]})
            assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_not_allowed", r.text
            # a name that passed when configured but resolves to a refused address when connecting
            ok(
                c.post(
                    "/api/mirrors",
                    json={
                        "name": "es-dns",
                        "upstream": f"http://localhost:{world['upstream'].port}",
                        "channel": "es-mirrored",
                        "subdirs": ["noarch"],
                    },
                )
            )
            with _loopback_refused(srv):
                run = c.post("/api/mirrors/es-dns/runs", params={"wait": True}).json()
            assert run["status"] == "failed" and "not allowed" in (run["error"] or ""), run
            run = c.post("/api/mirrors/es-dns/runs", params={"wait": True, "full": True}).json()
            assert run["status"] == "completed", run
    finally:
        httpd.shutdown()
        httpd.server_close()
