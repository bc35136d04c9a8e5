"""Accounts, groups, grants and tokens for access tests, made through the real REST API."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import msgpack
import zstandard

from condavault.auth.models import Token
from condavault.db.base import utcnow
from tests.support.server import Server

PRIVACIES = ("public", "authenticated", "private")
IDENTITIES = ("anonymous", "outsider", "member", "chanadmin", "revoked", "expired", "admin")
INVALID = frozenset({"revoked", "expired"})


@dataclass
class Accounts:
    prefix: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    group: str = ""
    password: str = "correct-horse-battery"

    def headers(self, who: str) -> dict[str, str]:
        tok = self.tokens[who]
        return {"Authorization": f"Bearer {tok}"} if tok else {}


def ok(r: object, *codes: int) -> None:
    status = r.status_code  # type: ignore[attr-defined]
    assert status in (codes or (200, 201, 204)), f"{status}: {r.text[:500]}"  # type: ignore[attr-defined]


def make_accounts(server: Server, prefix: str) -> Accounts:
    """outsider (no grants), member (in ``<prefix>-team``), chanadmin; tokens for each plus a revoked
    and an expired token of ``member``; ``admin`` is the bootstrap admin token."""
    acc = Accounts(prefix=prefix, group=f"{prefix}-team")
    with server.client() as c:
        for who in ("outsider", "member", "chanadmin", "target"):
            name = f"{prefix}-{who}"
            ok(c.post("/api/users", json={"username": name, "password": acc.password}))
            acc.users[who] = name
        ok(c.post("/api/groups", json={"name": acc.group}))
        ok(c.put(f"/api/groups/{acc.group}/members/{acc.users['member']}"))
        for who in ("outsider", "member", "chanadmin"):
            r = c.post("/api/tokens", json={"user": acc.users[who], "scopes": [{"scope": "api"}], "name": who})
            ok(r)
            acc.tokens[who] = r.json()["token"]
        r = c.post("/api/tokens", json={"user": acc.users["member"], "scopes": [{"scope": "api"}], "name": "revoked"})
        acc.tokens["revoked"] = r.json()["token"]
        ok(c.delete(f"/api/tokens/{r.json()['id']}"))
        r = c.post(
            "/api/tokens",
            json={
                "user": acc.users["member"],
                "scopes": [{"scope": "api"}],
                "name": "expired",
                "expires_at": (utcnow() + timedelta(hours=1)).isoformat(),
            },
        )
        acc.tokens["expired"] = r.json()["token"]
        expired_id = r.json()["id"]
    with server.ctx.db.write_session() as s:  # time travel: the token expired an hour ago
        s.get(Token, expired_id).expires_at = utcnow() - timedelta(hours=1)  # type: ignore[union-attr]
    server.ctx.auth.invalidate()
    acc.tokens["anonymous"] = None
    acc.tokens["admin"] = server.admin_token
    return acc


def grant_channel(server: Server, acc: Accounts, channel: str) -> None:
    with server.client() as c:
        ok(c.post(f"/api/channels/{channel}/grants", json={"role": "owner", "user": acc.users["chanadmin"]}))
        ok(c.post(f"/api/channels/{channel}/grants", json={"role": "viewer", "group": acc.group}))


def may(who: str, perm: str, privacy: str) -> bool:
    """The expected decision for the test identities (design.md §8)."""
    if who in INVALID:
        return False
    if who == "admin":
        return True
    if perm == "read":
        if privacy == "public":
            return True
        if privacy == "authenticated":
            return who != "anonymous"
        return who in ("member", "chanadmin")
    if perm in ("write", "manage"):
        return who == "chanadmin"
    return False


def wait_for(fn, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def repo_paths(server: Server, channel: str, package: Path) -> dict[str, str]:
    """Every kind of repo URL of a channel holding ``package`` (noarch): name -> path below /api/repo."""
    sub = package.parent.name
    with server.client() as c:
        wait_for(lambda: c.get(f"/api/repo/{channel}/channeldata.json").status_code == 200)
        raw = c.get(f"/api/repo/{channel}/{sub}/repodata_shards.msgpack.zst")
        ok(raw, 200)
    index = msgpack.unpackb(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw.content)).read())
    name = package.name.rsplit("-", 2)[0]
    shard = index["shards"][name].hex()
    return {
        "repodata.json": f"{channel}/{sub}/repodata.json",
        "repodata.json.zst": f"{channel}/{sub}/repodata.json.zst",
        "shard-index": f"{channel}/{sub}/repodata_shards.msgpack.zst",
        "shard": f"{channel}/{sub}/shards/{shard}.msgpack.zst",
        "package": f"{channel}/{sub}/{package.name}",
        "channeldata.json": f"{channel}/channeldata.json",
    }
