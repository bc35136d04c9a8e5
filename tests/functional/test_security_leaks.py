"""Existence leaks and small privilege gaps: hidden mirrors look missing, restricted tokens revoke only
themselves, every numeric parameter is bounded (no database overflow answers 500)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel

MIRROR_ROUTES = [
    ("GET", ""),
    ("GET", "/export"),
    ("GET", "/runs"),
    ("GET", "/runs/1"),
    ("GET", "/explain?q=x"),
    ("GET", "/items"),
    ("POST", "/plan"),
    ("POST", "/runs"),
    ("POST", "/cancel"),
    ("DELETE", ""),
]


@pytest.fixture(scope="module")
def world(
    shared_server: Server, packages_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    srv = shared_server
    tokens = {}
    with srv.client() as c:
        for user in ("lk-reader", "lk-outsider"):
            ok(c.post("/api/users", json={"username": user, "password": "leaks-password"}))
            r = c.post("/api/tokens", json={"user": user, "scopes": [{"scope": "api"}]})
            tokens[user] = r.json()["token"]
        ok(c.post("/api/channels", json={"name": "lk-secretchan", "privacy": "private"}))
        ok(c.post("/api/channels/lk-secretchan/grants", json={"role": "viewer", "user": "lk-reader"}))
    root = build_channel(packages_dir, tmp_path_factory.mktemp("lk-up"), subdirs=("noarch",), names={"dependency"})
    with StaticChannel(root) as upstream, srv.client() as c:
        ok(
            c.post(
                "/api/mirrors",
                json={"name": "lk-secret", "upstream": upstream.url, "channel": "lk-secretchan", "subdirs": ["noarch"]},
            )
        )
        yield {"srv": srv, "tokens": tokens}


def _client(world: dict[str, Any], who: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {world['tokens'][who]}"} if who != "anonymous" else {}
    return httpx.Client(base_url=world["srv"].url, headers=headers, timeout=60)


def test_a_mirror_of_a_channel_you_may_not_read_looks_missing(world: dict[str, Any]) -> None:
    for who in ("anonymous", "lk-outsider"):
        with _client(world, who) as c:
            for method, suffix in MIRROR_ROUTES:
                hidden = c.request(method, f"/api/mirrors/lk-secret{suffix}")
                missing = c.request(method, f"/api/mirrors/lk-nothing{suffix}")
                where = f"{method} {suffix or '/'} as {who}"
                assert hidden.status_code == missing.status_code == 404, (where, hidden.text, missing.text)
                assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == "mirror_not_found"
                assert "secretchan" not in hidden.text, where
            assert "lk-secret" not in c.get("/api/mirrors").text
    with _client(world, "lk-reader") as c:  # may read the channel: sees the mirror, may not change it
        assert c.get("/api/mirrors/lk-secret").status_code == 200
        assert c.post("/api/mirrors/lk-secret/runs").status_code == 403


def test_a_restricted_token_revokes_only_itself(world: dict[str, Any]) -> None:
    with _client(world, "lk-outsider") as c:
        read = c.post("/api/tokens", json={"scopes": [{"scope": "read"}], "name": "ro"}).json()
        upload = c.post("/api/tokens", json={"scopes": [{"scope": "upload"}], "name": "up"}).json()
    with httpx.Client(base_url=world["srv"].url, headers={"Authorization": f"Bearer {read['token']}"}) as ro:
        for target in (upload["id"], upload["prefix"]):
            r = ro.delete(f"/api/tokens/{target}")
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", r.text
        # its owner's full token is out of reach too
        with _client(world, "lk-outsider") as c:
            mine = [t for t in c.get("/api/tokens").json() if t["revoked_at"] is None]
        assert len(mine) >= 3
        ok(ro.delete(f"/api/tokens/{read['id']}"))  # itself: fine
        assert ro.get("/api/whoami").status_code == 401
    with _client(world, "lk-outsider") as c:
        left = {t["id"]: t["revoked_at"] for t in c.get("/api/tokens").json()}
        assert left[upload["id"]] is None and left[read["id"]] is not None


def test_every_numeric_parameter_is_bounded(world: dict[str, Any]) -> None:
    spec = httpx.get(f"{world['srv'].url}/api/openapi.json").json()
    unbounded = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                options = schema.get("anyOf", [schema])
                for opt in options:
                    if opt.get("type") in ("integer", "number"):
                        has_min = "minimum" in opt or "exclusiveMinimum" in opt
                        has_max = "maximum" in opt or "exclusiveMaximum" in opt
                        if not (has_min and has_max):
                            unbounded.append(f"{method.upper()} {path} {param['name']}")
    assert unbounded == []


def test_huge_or_negative_numbers_are_422_not_500(world: dict[str, Any]) -> None:
    srv = world["srv"]
    with srv.client() as c:
        srv.channel("lk-pub")
        for url, params in (
            ("/api/cves/history", {"limit": 10**30}),
            ("/api/cves/history", {"limit": -1}),
            ("/api/cves", {"offset": 10**30}),
            ("/api/channels/lk-pub/files", {"offset": 10**30}),
            ("/api/channels/lk-pub/files", {"offset": 2**63}),
            ("/api/channels/lk-pub/files", {"limit": -1}),
            ("/api/mirrors/lk-secret/items", {"offset": 10**30}),
            ("/api/mirrors/lk-secret/runs/" + str(10**30), {}),
            ("/api/mirrors/lk-secret/runs", {"limit": 0}),
            ("/api/audit/changes", {"limit": 10**30}),
        ):
            for who in (c, httpx.Client(base_url=srv.url)):
                r = who.get(url, params=params)
                assert r.status_code in (401, 403, 404, 422), (url, params, r.status_code, r.text[:200])
                if who is c:
                    assert r.status_code == 422, (url, params, r.text[:200])
