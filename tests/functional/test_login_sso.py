"""LDAP/AD and OpenID Connect logins against a real slapd and a real OpenID provider."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, Connection

from tests.support.accounts import ok
from tests.support.identity_servers import start_identity_server, start_slapd
from tests.support.ldap_server import SlapdServer
from tests.support.oidc_server import Browser, OidcProvider
from tests.support.server import Server, stop_server

PKG = "noarch/dependency-1.0-0.conda"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idp(
    tmp_path_factory: pytest.TempPathFactory, db_backend: str, slapd: SlapdServer, packages_dir: Path
) -> Iterator[tuple[Server, OidcProvider]]:
    handle, pg, provider = start_identity_server(
        tmp_path_factory.mktemp("data"), db_backend, slapd, tmp_path_factory.mktemp("oidc"), ldap_sync_minutes=0
    )
    for name, group in (("ldap-devs", "developers"), ("sso-devs", "sso-developers")):
        handle.channel(name, "private")
        ok(handle.upload(name, packages_dir / PKG))
        with handle.client() as c:
            ok(c.post("/api/groups", json={"name": group}))  # later filled by LDAP / OIDC logins
            ok(c.post(f"/api/channels/{name}/grants", json={"role": "viewer", "group": group}))
    try:
        yield handle, provider
    finally:
        stop_server(handle, pg)
        provider.stop()


def _login(server: Server, username: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=30)
    r = c.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return c


def _groups(server: Server, username: str) -> list[str]:
    with server.client() as c:
        return c.get(f"/api/users/{username}").json()["groups"]  # type: ignore[no-any-return]


def test_ldap_login_provisions_user_and_groups(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    alice = _login(server, "alice", "alice-pw")
    try:
        me = alice.get("/api/whoami").json()
        assert me["username"] == "alice" and me["token_id"] is None
        # directory groups (groupOfNames and posixGroup) became condavault groups
        assert {"developers", "admins", "sysops"} <= set(_groups(server, "alice"))
        # ... which the channel grant uses
        assert alice.get("/api/repo/ldap-devs/noarch/repodata.json").status_code == 200
    finally:
        alice.close()
    with server.client() as c:
        u = c.get("/api/users/alice").json()
        assert u["source"] == "ldap" and u["email"] == "alice@example.org" and not u["has_password"]
    carol = _login(server, "carol", "carol-pw")  # not a developer
    assert carol.get("/api/repo/ldap-devs/noarch/repodata.json").status_code == 403
    carol.close()


def test_ldap_wrong_password_and_unknown_user(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    with httpx.Client(base_url=server.url) as c:
        for user, pw in (("bob", "wrong"), ("nobody", "x"), ("*)(uid=*", "x"), ("bob", "")):
            r = c.post("/api/auth/login", json={"username": user, "password": pw})
            assert r.status_code in (401, 422), r.text
            assert "set-cookie" not in r.headers


def test_ldap_group_sync_keeps_local_memberships(idp: tuple[Server, OidcProvider], slapd: SlapdServer) -> None:
    server, _ = idp
    developers, bob = f"cn=developers,{slapd.groups_dn}", f"uid=bob,{slapd.people_dn}"
    conn = Connection(slapd.ldap_url, slapd.admin_dn, slapd.admin_password, auto_bind=True)
    conn.modify(developers, {"member": [(MODIFY_ADD, [bob])]})  # slapd is shared by both databases' runs
    _login(server, "bob", "bob-pw").close()
    assert "developers" in _groups(server, "bob")
    with server.client() as c:
        if c.get("/api/groups/local-team").status_code == 404:
            ok(c.post("/api/groups", json={"name": "local-team"}))
        ok(c.put("/api/groups/local-team/members/bob"))
    # the directory drops bob from developers; the scheduled sync follows
    conn.modify(developers, {"member": [(MODIFY_DELETE, [bob])]})
    conn.unbind()
    out = server.ctx.domains.auth.login.sync_ldap()
    server.ctx.auth.invalidate()
    assert out["changes"] >= 1
    groups = _groups(server, "bob")
    assert "developers" not in groups and "local-team" in groups
    with server.client() as c:
        members = c.get("/api/groups/local-team").json()["members"]
    assert members == [{"username": "bob", "source": "local"}]


def test_oidc_browser_login_through_the_provider(idp: tuple[Server, OidcProvider]) -> None:
    server, _provider = idp
    browser = Browser()
    try:
        callback = browser.walk(
            f"{server.url}/api/auth/oidc/login?next=/api/whoami",
            fill={"login": "olivia", "password": "any"},
            stop_at=f"{server.url}/api/auth/oidc/callback",
        )
        assert isinstance(callback, str) and "code=" in callback
        back = browser.client.get(callback)  # the provider sends the browser to our callback
        assert back.status_code == 303, back.text
        assert back.headers["location"] == "/api/whoami"
        cookie = back.headers.get_list("set-cookie")
        session = next(h for h in cookie if h.startswith("condavault_session="))
        assert "HttpOnly" in session and "SameSite=lax" in session
        me = browser.client.get(f"{server.url}/api/whoami").json()
        assert me["username"] == "olivia"
        # group claims ("/sso-developers") grant the channel
        assert browser.client.get(f"{server.url}/api/repo/sso-devs/noarch/repodata.json").status_code == 200
        assert browser.client.get(f"{server.url}/api/repo/ldap-devs/noarch/repodata.json").status_code == 403
        # a cookie session must send the CSRF token to change anything
        r = browser.client.post(f"{server.url}/api/tokens", json={"scopes": [{"scope": "read"}]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        csrf = browser.client.cookies.get("condavault_csrf")
        r = browser.client.post(
            f"{server.url}/api/tokens", json={"scopes": [{"scope": "read"}]}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 201
    finally:
        browser.close()
    assert {"sso-developers", "sso-readers"} <= set(_groups(server, "olivia"))
    with server.client() as c:
        assert c.get("/api/users/olivia").json()["source"] == "oidc"


def test_oidc_callback_without_our_state_is_refused(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/api/auth/oidc/callback", params={"code": "x", "state": "y"})
        assert r.status_code == 401 and "set-cookie" not in r.headers


def test_oidc_cannot_take_over_a_directory_account(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    _login(server, "carol", "carol-pw").close()  # carol exists, from LDAP
    browser = Browser()
    try:
        callback = browser.walk(
            f"{server.url}/api/auth/oidc/login",
            fill={"login": "carol", "password": "any"},
            stop_at=f"{server.url}/api/auth/oidc/callback",
        )
        r = browser.client.get(callback)  # type: ignore[arg-type]
        assert r.status_code == 401
    finally:
        browser.close()


def test_cli_device_flow_login(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    with httpx.Client(base_url=server.url) as c:
        start = c.post("/api/auth/oidc/device").json()
        assert c.post("/api/auth/oidc/device/poll", json={"handle": start["handle"]}).json()["status"] == "pending"
        browser = Browser()
        try:
            done = browser.walk(start["verification_uri"], fill={"user_code": start["user_code"], "login": "oscar"})
            assert isinstance(done, httpx.Response) and "Sign-in Success" in done.text
        finally:
            browser.close()
        out = None
        for _ in range(40):
            out = c.post("/api/auth/oidc/device/poll", json={"handle": start["handle"]}).json()
            if out["status"] == "done":
                break
            time.sleep(0.25)
        assert out is not None and out["status"] == "done" and out["username"] == "oscar"
        token = out["token"]
        assert c.get("/api/whoami", headers={"Authorization": f"Bearer {token}"}).json()["username"] == "oscar"
        assert c.post("/api/auth/oidc/device/poll", json={"handle": "forged"}).status_code == 401
