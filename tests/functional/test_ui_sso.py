"""Logging in to the web UI with an LDAP account (the login form) and with OpenID Connect (the single
sign-on link), against a real slapd and a real OpenID provider; the session then works for pages and
forms, and the admin page shows both backends as configured."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.browser import CSRF, csrf_of, web_login
from tests.support.identity_servers import start_identity_server, start_slapd
from tests.support.oidc_server import Browser, OidcProvider
from tests.support.server import Server, stop_server

PKG = "noarch/dependency-1.0-0.conda"


@pytest.fixture(scope="module")
def idp(
    tmp_path_factory: pytest.TempPathFactory, db_backend: str, packages_dir: Path
) -> Iterator[tuple[Server, OidcProvider]]:
    slapd = start_slapd(tmp_path_factory.mktemp("slapd"))
    handle, pg, provider = start_identity_server(
        tmp_path_factory.mktemp("data"), db_backend, slapd, tmp_path_factory.mktemp("oidc"), ldap_sync_minutes=0
    )
    try:
        for name, group in (("ldap-devs", "developers"), ("sso-devs", "sso-developers")):
            handle.channel(name, "private")
            ok(handle.upload(name, packages_dir / PKG))
            with handle.client() as c:
                ok(c.post("/api/groups", json={"name": group}))
                ok(c.post(f"/api/channels/{name}/grants", json={"role": "viewer", "group": group}))
        yield handle, provider
    finally:
        stop_server(handle, pg)
        provider.stop()
        slapd.stop()


def test_ldap_login_through_the_form(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    alice = web_login(server, "alice", "alice-pw")  # a directory account, in group "developers"
    assert alice.get("/channels/ldap-devs/packages/dependency").status_code == 200
    assert alice.get("/channels/sso-devs").status_code == 404
    assert "alice" in alice.get("/tokens").text
    alice.close()
    carol = web_login(server, "carol", "carol-pw")  # not a developer
    r = carol.get("/channels/ldap-devs/packages/dependency")
    assert r.status_code == 404 and "ldap-devs" not in carol.get("/channels").text
    carol.close()
    with httpx.Client(base_url=server.url) as c:
        token = CSRF.search(c.get("/login").text).group(1)  # type: ignore[union-attr]
        r = c.post("/login", data={"username": "alice", "password": "wrong", "csrf_token": token})
        assert r.status_code == 401 and "condavault_session" not in r.headers.get("set-cookie", "")


def test_oidc_login_from_the_login_page(idp: tuple[Server, OidcProvider]) -> None:
    server, _ = idp
    browser = Browser()
    try:
        page = browser.client.get(f"{server.url}/login", params={"next": "/tokens"})
        link = re.search(r'href="(/api/auth/oidc/login[^"]*)"', page.text)
        assert link is not None, "the login page offers single sign-on"
        callback = browser.walk(
            server.url + html.unescape(link.group(1)),
            fill={"login": "olivia", "password": "any"},
            stop_at=f"{server.url}/api/auth/oidc/callback",
        )
        assert isinstance(callback, str) and "code=" in callback
        back = browser.client.get(callback)
        assert back.status_code == 303 and back.headers["location"] == "/tokens"
        browser.client.base_url = httpx.URL(server.url)
        tokens = browser.client.get("/tokens")
        assert tokens.status_code == 200 and "olivia" in tokens.text
        # the SSO group claim grants the private channel; the session's forms work
        assert browser.client.get("/channels/sso-devs/packages/dependency").status_code == 200
        r = browser.client.post(
            "/tokens", data={"channel": "sso-devs", "days": "1", "csrf_token": csrf_of(browser.client)}
        )
        assert r.status_code == 200 and "channel_alias:" in r.text
        assert browser.client.post("/logout", data={"csrf_token": csrf_of(browser.client)}).status_code == 303
        assert browser.client.get("/tokens").status_code == 303  # logged out: the login page
    finally:
        browser.close()


def test_admin_page_shows_the_login_backends(idp: tuple[Server, OidcProvider]) -> None:
    server, provider = idp
    with server.client() as c:
        ok(c.post("/api/users", json={"username": "sso-root", "password": "correct-horse-battery", "is_admin": True}))
    root = web_login(server, "sso-root", "correct-horse-battery")
    page = root.get("/admin").text
    assert "ldap://" in page and provider.issuer in page
    root.close()
