"""Users, groups, roles, grants and tokens through the real CLI and REST API; sessions, CSRF,
disable/enable, revocation, throttling and the first-admin bootstrap."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.accounts import ok
from tests.support.server import Server, start_server, stop_server

PKG = "noarch/dependency-1.0-0.conda"


def _repodata(server: Server, channel: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.repo}/{channel}/noarch/repodata.json", headers=headers).status_code


def test_cli_users_groups_grants_tokens(shared_server: Server, tmp_path: Path) -> None:
    srv = shared_server
    srv.channel("us-priv", "private")
    srv.cli("user", "create", "us-dave", "--password", "dave-password-1")
    srv.cli("group", "create", "us-team")
    srv.cli("group", "add", "us-team", "us-dave")
    srv.cli("channel", "grant", "us-priv", "--group", "us-team", "--role", "viewer")
    out = srv.cli("token", "create", "--user", "us-dave", "--scope", "read", "--channel", "us-priv",
                  "--expires", "2099-01-01").stdout  # fmt: skip
    token = out.split()[-1]
    assert token.startswith("cv-") and all(ch.isalnum() or ch == "-" for ch in token)
    assert _repodata(srv, "us-priv", token) == 200
    # the token is stored hashed: it appears nowhere in the listing
    with srv.client() as c:
        listing = c.get("/api/tokens", params={"all_users": True}).text
    assert token not in listing and token.split("-")[1] in listing
    # disable: at once; enable: works again
    srv.cli("user", "disable", "us-dave")
    assert _repodata(srv, "us-priv", token) == 401
    srv.cli("user", "enable", "us-dave")
    assert _repodata(srv, "us-priv", token) == 200
    # revoking the grant / the group membership takes effect at once
    srv.cli("channel", "revoke", "us-priv", "--group", "us-team", "--role", "viewer")
    assert _repodata(srv, "us-priv", token) == 403
    with srv.client() as c:
        ok(c.post("/api/channels/us-priv/grants", json={"role": "viewer", "user": "us-dave"}))
    assert _repodata(srv, "us-priv", token) == 200
    # a read token cannot mint tokens nor act outside its channels
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/api/tokens", json={"scopes": [{"scope": "api"}]}).status_code == 403
        assert c.post("/api/channels", json={"name": "us-nope"}).status_code == 403
    srv.cli("token", "revoke", token)
    assert _repodata(srv, "us-priv", token) == 401
    # custom role
    srv.cli("role", "create", "us-uploader", "-p", "channel:read", "-p", "channel:write")
    with srv.client() as c:
        ok(c.post("/api/channels/us-priv/grants", json={"role": "us-uploader", "user": "us-dave"}))
        assert {"channel:read", "channel:write"} == set(
            next(r for r in c.get("/api/roles").json() if r["name"] == "us-uploader")["permissions"]
        )
    # password reset by the admin, then CLI login stores a token for this server
    srv.cli("user", "reset-password", "us-dave", "--password", "dave-password-2")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    srv.extra_env.update(env)
    try:
        srv.cli("login", "--username", "us-dave", "--password", "dave-password-2", token=None)
        assert (tmp_path / "cfg" / "condavault" / "credentials.json").stat().st_mode & 0o077 == 0
        me = srv.cli("whoami", token=None).stdout
        assert '"us-dave"' in me
        bad = srv.cli("login", "--username", "us-dave", "--password", "dave-password-1", token=None, check=False)
        assert bad.returncode != 0
    finally:
        for k in env:
            srv.extra_env.pop(k, None)


def test_sessions_csrf_logout_and_disable(shared_server: Server) -> None:
    srv = shared_server
    with srv.client() as c:
        ok(c.post("/api/users", json={"username": "us-erin", "password": "erin-password-1"}))
    b = httpx.Client(base_url=srv.url)
    r = b.post("/api/auth/login", json={"username": "us-erin", "password": "erin-password-1"})
    ok(r, 200)
    csrf = r.json()["csrf_token"]
    session = next(h for h in r.headers.get_list("set-cookie") if h.startswith("condavault_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
    assert b.get("/api/whoami").json()["username"] == "us-erin"
    # (behind a trusted https reverse proxy the cookie is Secure: test_security_clients.py)
    # state changes need the CSRF token (double submit against the server-side value)
    assert b.post("/api/tokens", json={"scopes": [{"scope": "read"}]}).status_code == 403
    bad = b.post("/api/tokens", json={"scopes": [{"scope": "read"}]}, headers={"X-CSRF-Token": "x" + csrf})
    assert bad.status_code == 403
    ok(b.post("/api/tokens", json={"scopes": [{"scope": "read"}]}, headers={"X-CSRF-Token": csrf}))
    # a forged cookie is nobody
    forged = httpx.Client(base_url=srv.url, cookies={"condavault_session": "abc.def.ghi"})
    assert forged.get("/api/whoami").json()["authenticated"] is False
    # cross-site login posts are refused
    assert srv.client(None).post("/api/auth/login", json={"username": "us-erin", "password": "erin-password-1"},
                                 headers={"Origin": "https://evil.example"}).status_code == 403  # fmt: skip
    # disabling the user ends the session at once
    with srv.client() as c:
        ok(c.patch("/api/users/us-erin", json={"disabled": True}))
    assert b.get("/api/whoami").json()["authenticated"] is False
    with srv.client() as c:
        ok(c.patch("/api/users/us-erin", json={"disabled": False}))
    assert b.get("/api/whoami").json()["authenticated"] is False  # ended, not suspended
    r = b.post("/api/auth/login", json={"username": "us-erin", "password": "erin-password-1"})
    csrf = r.json()["csrf_token"]
    assert b.post("/api/auth/logout").status_code == 403  # logout is a change too
    assert b.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert b.get("/api/whoami").json()["authenticated"] is False
    b.close()
    forged.close()


def test_failed_logins_are_throttled(shared_server: Server) -> None:
    srv = shared_server
    with srv.client() as c:
        ok(c.post("/api/users", json={"username": "us-frank", "password": "frank-password-1"}))
    with httpx.Client(base_url=srv.url) as b:
        codes = [b.post("/api/auth/login", json={"username": "us-frank", "password": f"no{i}"}).status_code
                 for i in range(5)]  # fmt: skip
        assert codes == [401] * 5
        r = b.post("/api/auth/login", json={"username": "us-frank", "password": "frank-password-1"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        # unknown accounts are throttled the same way (no user enumeration)
        codes = [b.post("/api/auth/login", json={"username": "us-ghost", "password": "x"}).status_code
                 for _ in range(6)]  # fmt: skip
        assert codes == [401] * 5 + [429]


def test_admin_bootstrap_and_no_default_credentials(tmp_path: Path, db_backend: str) -> None:
    srv, pg = start_server(tmp_path / "a", db_backend)
    try:
        with httpx.Client(base_url=srv.url) as b:
            for pw in ("admin", "password", "changeme", ""):
                assert b.post("/api/auth/login", json={"username": "admin", "password": pw}).status_code in (401, 422)
    finally:
        stop_server(srv, pg)
    srv, pg = start_server(tmp_path / "b", db_backend, admin_password="bootstrap-secret-1")
    try:
        with httpx.Client(base_url=srv.url) as b:
            r = b.post("/api/auth/login", json={"username": "admin", "password": "bootstrap-secret-1"})
            assert r.status_code == 200 and b.get("/api/whoami").json()["is_admin"] is True
        # an admin made from the CLI
        srv.cli("user", "create", "us-root", "--password", "root-password-1", "--admin")
        with httpx.Client(base_url=srv.url) as b:
            ok(b.post("/api/auth/login", json={"username": "us-root", "password": "root-password-1"}), 200)
            assert b.get("/api/whoami").json()["is_admin"] is True
    finally:
        stop_server(srv, pg)
