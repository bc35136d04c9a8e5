"""The web UI over real HTTP: every page x anonymous / a user without rights / a member / an admin, the same
permissions as the API (a private channel is a 404 page and its name appears nowhere), CSRF on every form,
cookie flags, escaping, and precise 4xx pages for bad input (never a 500)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from condavault.web import ui
from tests.support.accounts import Accounts, grant_channel, make_accounts, ok, wait_for
from tests.support.browser import CSRF, csrf_of, web_client, web_login
from tests.support.packages import file_member, make_conda
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel

WHO = ("anonymous", "outsider", "member", "admin")


@dataclass
class UIWorld:
    server: Server
    acc: Accounts
    pub: str
    priv: str
    mirror: str
    run_id: int
    sessions: dict[str, httpx.Client] = field(default_factory=dict)

    def web(self, who: str) -> httpx.Client:
        return self.sessions[who]


@pytest.fixture(scope="module")
def world(shared_server: Server, packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIWorld]:
    srv = shared_server
    tag = uuid.uuid4().hex[:6]
    acc = make_accounts(srv, f"ui{tag}")
    pub, priv = f"uipub-{tag}", f"uipriv-{tag}"
    srv.channel(pub, "public")
    srv.channel(priv, "private")
    grant_channel(srv, acc, priv)
    work = tmp_path_factory.mktemp("uipkgs")
    ok(srv.upload(pub, make_conda(work, "uilib", "1.0", "0")))
    ok(srv.upload(pub, make_conda(work, "uitool", "2.0", "0", index_extra={"depends": ["uilib >=1.0"]})))
    # a private package that depends on the public one: a dependant only its readers may see
    ok(srv.upload(priv, make_conda(work, f"secret{tag}", "1.0", "0", index_extra={"depends": ["uilib"]})))
    with srv.client() as c:
        ok(c.patch(f"/api/channels/{pub}", json={"description": "<script>alert('x')</script> public"}))
        ok(c.post("/api/users", json={"username": f"ui{tag}-root", "password": acc.password, "is_admin": True}))
    root = build_channel(packages_dir, tmp_path_factory.mktemp("uiup"), subdirs=("noarch",), names={"dependency"})
    with StaticChannel(root) as upstream, srv.client() as c:
        mirror = f"uimirror-{tag}"
        ok(
            c.post(
                "/api/mirrors",
                json={
                    "name": mirror,
                    "upstream": upstream.url,
                    "channel": priv,
                    "subdirs": ["noarch"],
                    "on_remove": "keep",
                },
            )
        )
        run = c.post(f"/api/mirrors/{mirror}/runs", params={"wait": True})
        ok(run, 202)
        w = UIWorld(srv, acc, pub, priv, mirror, run.json()["id"])
        w.sessions["anonymous"] = web_client(srv)
        for who in ("outsider", "member"):
            w.sessions[who] = web_login(srv, acc.users[who], acc.password)
        w.sessions["admin"] = web_login(srv, f"ui{tag}-root", acc.password)
        yield w
    for c in w.sessions.values():
        c.close()


def pages(w: UIWorld) -> dict[str, str]:
    """One URL per GET page of the UI (the route pattern -> a concrete URL)."""
    return {
        "/": "/",
        "/search": "/search?q=uilib",
        "/provides": "/provides?path=share/x.txt",
        "/login": "/login",
        "/tokens": "/tokens",
        "/channels": "/channels",
        "/channels/{channel}": f"/channels/{w.pub}",
        "/channels/{channel}/packages/{name}": f"/channels/{w.pub}/packages/uilib",
        "/channels/{channel}/packages/{name}/dependants": f"/channels/{w.pub}/packages/uilib/dependants",
        "/mirrors": "/mirrors",
        "/mirrors/{name}": f"/mirrors/{w.mirror}?q=dependency",
        "/mirrors/{name}/runs/{run_id}": f"/mirrors/{w.mirror}/runs/{w.run_id}",
        "/cves": "/cves?linked=false",
        "/cves/{ident}": "/cves/CVE-1999-0001",
        "/admin": "/admin",
        "/admin/users": "/admin/users",
        "/admin/tokens": "/admin/tokens",
        "/admin/audit": "/admin/audit",
    }


# expected status per page and identity (303: the login page)
EXPECTED: dict[str, dict[str, int]] = {
    "/tokens": {"anonymous": 303},
    "/mirrors/{name}": {"anonymous": 404, "outsider": 404},  # the mirror feeds the private channel
    "/mirrors/{name}/runs/{run_id}": {"anonymous": 404, "outsider": 404},
    "/cves/{ident}": {w: 404 for w in WHO},  # no such advisory
    "/admin": {"anonymous": 303, "outsider": 403, "member": 403},
    "/admin/users": {"anonymous": 303, "outsider": 403, "member": 403},
    "/admin/tokens": {"anonymous": 303, "outsider": 403, "member": 403},
    "/admin/audit": {"anonymous": 303, "outsider": 403, "member": 403},
}


def test_every_ui_page_is_checked(world: UIWorld) -> None:
    gets = {r.path for router in ui.ROUTERS for r in router.routes if "GET" in r.methods}  # type: ignore[attr-defined]
    assert gets == set(pages(world)), gets ^ set(pages(world))


@pytest.mark.parametrize("who", WHO)
def test_pages_per_identity(world: UIWorld, who: str) -> None:
    c = world.web(who)
    hidden = who in ("anonymous", "outsider")
    for route, url in pages(world).items():
        r = c.get(url)
        want = EXPECTED.get(route, {}).get(who, 200)
        assert r.status_code == want, f"{url} as {who}: {r.status_code} {r.text[:300]}"
        if want == 303:
            assert r.headers["location"].startswith("/login?next=")
            continue
        assert r.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        if hidden:  # the private channel, its package and its mirror are named nowhere
            assert world.priv not in r.text and f"secret{world.priv[-6:]}" not in r.text, f"{url} leaks to {who}"
        assert "<script>alert" not in r.text, f"{url} does not escape"


@pytest.mark.parametrize("who", WHO)
def test_private_channel_pages(world: UIWorld, who: str) -> None:
    c = world.web(who)
    secret = f"secret{world.priv[-6:]}"
    urls = [
        f"/channels/{world.priv}",
        f"/channels/{world.priv}/packages/{secret}",
        f"/channels/{world.priv}/packages/nothing-here",
        "/channels/no-such-channel",
    ]
    for url in urls:
        r = c.get(url)
        readable = who in ("member", "admin") and "nothing" not in url and "no-such" not in url
        assert r.status_code == (200 if readable else 404), f"{url} as {who}: {r.status_code}"
        if not readable:
            assert world.priv not in r.text.replace(url, "")
    listing = c.get("/channels").text
    assert (world.priv in listing) == (who in ("member", "admin"))
    # the public package's dependants include the private one only for the private channel's readers
    page = c.get(f"/channels/{world.pub}/packages/uilib").text
    assert ("uitool" in page) and ((secret in page) == (who in ("member", "admin")))  # listed on the page itself
    for url in (
        f"/channels/{world.pub}/packages/uilib/dependants?part=true",
        f"/channels/{world.pub}/packages/uilib/dependants",
    ):
        part = c.get(url).text
        assert (secret in part) == (who in ("member", "admin")), (url, who)
        assert "uitool" in part  # the public dependant, for everyone
    assert c.get(f"/channels/{world.priv}/packages/{secret}/dependants").status_code == (
        200 if who in ("member", "admin") else 404
    )
    assert c.get(f"/channels/{world.pub}/packages/nothing-here/dependants").status_code == 404


def test_package_page_contents(world: UIWorld) -> None:
    r = world.web("anonymous").get(f"/channels/{world.pub}/packages/uitool")
    assert r.status_code == 200
    html = r.text
    assert "uilib" in html and "&gt;=1.0" in html  # dependency with its constraint
    assert f"conda install -c {world.server.url}/api/repo/{world.pub} uitool" in html
    assert f"pixi workspace channel add {world.server.url}/api/repo/{world.pub}" in html
    assert "MIT" in html and "noarch" in html
    assert "<svg" in html and "0 downloads in 30 days" in html
    assert "share/x.txt" in html  # the build's files, with size and sha256
    with httpx.Client(base_url=world.server.url) as raw:
        for _ in range(2):
            assert raw.get(f"/api/repo/{world.pub}/noarch/uitool-2.0-0.conda").status_code == 200
    html = world.web("anonymous").get(f"/channels/{world.pub}/packages/uitool").text
    assert "2 downloads in 30 days (peak 2 a day)" in html
    assert re.search(r"<rect [^>]*><title>\d{4}-\d\d-\d\d: 2</title></rect>", html)  # today's bar


def test_bad_input_is_a_4xx_page(world: UIWorld) -> None:
    c = world.web("admin")
    # an unknown page: HTML for browsers, the API's JSON error for everyone else (and under /api always)
    r = c.get("/no/such/page", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "Log out" in r.text
    assert c.get("/no/such/page").json()["error"]["code"] == "not_found"
    r = c.get("/api/no/such", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.get("/static/nope.css", headers={"Accept": "text/html"}).status_code == 404
    for url, status in [
        ("/search?q=uilib&page=0", 400),
        ("/search?q=uilib&sort=evil", 400),
        ("/search?q=" + "x" * 600, 400),
        (f"/channels/{world.pub}/packages/uilib?file=" + "a" * 400, 400),
        (f"/channels/{world.pub}/packages/uilib?file=noarch/nope.conda", 404),
        (f"/mirrors/{world.mirror}/runs/99999999999", 400),
        ("/admin/audit?from=yesterday", 400),
        ("/cves?min_score=11", 400),
    ]:
        r = c.get(url)
        assert r.status_code == status, f"{url}: {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"].startswith("text/html")


def test_login_cookies_and_csrf(world: UIWorld) -> None:
    srv, acc = world.server, world.acc
    c = httpx.Client(base_url=srv.url, timeout=60)
    page = c.get("/login")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    creds = {"username": acc.users["outsider"], "password": acc.password}
    # no or another login CSRF token: refused before the password is looked at
    assert c.post("/login", data={**creds, "csrf_token": "forged"}).status_code == 403
    fresh = httpx.Client(base_url=srv.url, timeout=60)
    assert fresh.post("/login", data={**creds, "csrf_token": token}).status_code == 403  # no cookie
    # a cross-site form post
    r = c.post("/login", data={**creds, "csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # a wrong password: the form again, 401
    r = c.post("/login", data={**creds, "password": "wrong", "csrf_token": token})
    assert r.status_code == 401 and "Log in" in r.text
    token = CSRF.search(r.text).group(1)  # type: ignore[union-attr]  # the form again, with a new token
    r = c.post("/login", data={**creds, "csrf_token": token, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    cookies = r.headers.get_list("set-cookie")
    session = next(h for h in cookies if h.startswith("condavault_session="))
    assert "HttpOnly" in session and "samesite=lax" in session.lower()
    fresh.close()
    c.close()


def test_forms_need_the_session_csrf_token(world: UIWorld) -> None:
    c = world.web("member")
    good = csrf_of(c)
    form = {"channel": world.priv, "days": "7"}
    for bad in ({}, {"csrf_token": "x" * 43}, {"csrf_token": csrf_of(world.web("outsider"))}):
        r = c.post("/tokens", data={**form, **bad})
        assert r.status_code == 403, r.text[:200]
    # a bearer token instead of the session: refused too (forms are for browsers)
    r = httpx.post(
        f"{world.server.url}/tokens",
        data={**form, "csrf_token": good},
        headers={"Authorization": f"Bearer {world.acc.tokens['member']}"},
    )
    assert r.status_code == 403
    # JSON bodies are not forms
    assert c.post("/tokens", json={**form, "csrf_token": good}).status_code == 400
    # anonymous: log in first
    assert world.web("anonymous").post("/tokens", data={**form, "csrf_token": good}).status_code == 401
    # every form of the UI (the list comes from the application: a new form is checked too)
    values = {
        "name": world.mirror,
        "ident": "CVE-1999-0001",
        "token_id": "1",
        "channel": world.priv,
        "username": world.acc.users["member"],
    }
    posts = sorted(r.path for router in ui.ROUTERS for r in router.routes if "POST" in r.methods)  # type: ignore[attr-defined]
    assert len(posts) >= 12
    for route in posts:
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values[m.group(1)], route)
        for who in ("member", "admin"):
            r = world.web(who).post(path, data={"csrf_token": "forged", "username": "x", "password": "y"})
            assert r.status_code == 403, (path, who, r.status_code)


def test_token_page_issues_a_read_token(world: UIWorld) -> None:
    c = world.web("member")
    r = c.post("/tokens", data={"channel": world.priv, "days": "7", "csrf_token": csrf_of(c)})
    assert r.status_code == 200, r.text[:300]
    token = re.search(r'id="token-value" class="code">(cv-[A-Za-z0-9-]+)<', r.text).group(1)  # type: ignore[union-attr]
    assert f"channel_alias: {world.server.url}/api/repo/t/{token}" in r.text
    assert f"channels = [&#34;{world.server.url}/api/repo/t/{token}/{world.priv}&#34;]" in r.text
    with httpx.Client(base_url=world.server.url) as raw:
        assert raw.get(f"/api/repo/t/{token}/{world.priv}/noarch/repodata.json").status_code == 200
        assert raw.get(f"/api/repo/t/{token}/{world.pub}/noarch/repodata.json").status_code == 403  # scoped
    # a channel the caller may not read: the same 404 as a missing one
    out = world.web("outsider")
    r = out.post("/tokens", data={"channel": world.priv, "days": "7", "csrf_token": csrf_of(out)})
    assert r.status_code == 404 and world.priv not in r.text
    r = out.post("/tokens", data={"channel": world.pub, "days": "0", "csrf_token": csrf_of(out)})
    assert r.status_code == 400


def test_forms_apply_the_api_permissions(world: UIWorld) -> None:
    out, member = world.web("outsider"), world.web("member")
    # a mirror of a channel the caller may not read does not exist; a reader may not start it
    assert out.post(f"/mirrors/{world.mirror}/run", data={"csrf_token": csrf_of(out)}).status_code == 404
    assert member.post(f"/mirrors/{world.mirror}/run", data={"csrf_token": csrf_of(member)}).status_code == 403
    r = member.post(
        "/cves/CVE-1999-0001/curate", data={"csrf_token": csrf_of(member), "status": "cleared", "package": "uilib"}
    )
    assert r.status_code == 403
    # revoking another user's token: not found, as in the API
    with world.server.client() as c:
        other = c.post("/api/tokens", json={"scopes": [{"scope": "read"}]}).json()["id"]
    assert member.post(f"/tokens/{other}/revoke", data={"csrf_token": csrf_of(member)}).status_code == 404


def test_admin_audit_log_and_csv(world: UIWorld) -> None:
    c = world.web("admin")
    r = c.get("/admin/audit", params={"action": "channel:"})
    assert r.status_code == 200 and "channel:create" in r.text
    href = re.search(r'href="([^"]+)" id="csv-export"', r.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    csv = c.get(href)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "channel:create" in csv.text
    assert world.web("member").get(href).status_code == 403  # the API's own check


def test_login_again_ends_the_previous_session(world: UIWorld) -> None:
    c = web_login(world.server, world.acc.users["chanadmin"], world.acc.password)
    old = c.cookies.get("condavault_session")
    page = c.get("/login").text
    token = CSRF.search(page[page.index('action="/login"') :]).group(1)  # type: ignore[union-attr]  # not log out's
    r = c.post(
        "/login", data={"username": world.acc.users["chanadmin"], "password": world.acc.password, "csrf_token": token}
    )
    assert r.status_code == 303 and c.cookies.get("condavault_session") != old, r.text[-800:]
    with web_client(world.server) as stale:
        stale.cookies.set("condavault_session", old or "")
        assert stale.get("/tokens").status_code == 303  # the old session is over
    c.close()


def test_logout_ends_the_session(world: UIWorld) -> None:
    c = web_login(world.server, world.acc.users["chanadmin"], world.acc.password)
    assert c.get("/tokens").status_code == 200
    r = c.post("/logout", data={"csrf_token": csrf_of(c)})
    assert r.status_code == 303
    c.cookies.clear()
    assert c.get("/tokens").status_code == 303
    c.close()


@pytest.mark.parametrize("who", WHO)
def test_search_pages(world: UIWorld, who: str) -> None:
    c = world.web(who)
    secret = f"secret{world.priv[-6:]}"
    readable = who in ("member", "admin")
    r = c.get("/search", params={"q": "uilibb"})  # a typo
    assert r.status_code == 200
    assert f'href="/channels/{world.pub}/packages/uilib"' in r.text or 'id="did-you-mean">uilib<' in r.text
    for q in (secret, secret[:-2] + "xx", f"{secret} >=1", "path:share/x.txt"):
        r = c.get("/search", params={"q": q})
        assert r.status_code == 200, r.text[:300]
        assert (f"/packages/{secret}" in r.text) == readable, (q, who)
        assert (world.priv in r.text) == readable, (q, who)  # facets, results, suggestion
    r = c.get("/search", params={"q": secret, "channel": world.priv})
    assert r.status_code in (200, 400, 404) and (f"/packages/{secret}" in r.text) == readable
    r = c.get("/provides", params={"path": "share/x.txt"})
    assert r.status_code == 200 and (f"/packages/{secret}" in r.text) == readable
    assert f"/channels/{world.pub}/packages/uilib?file=noarch%2Fuilib-1.0-0.conda" in r.text  # that build
    r = c.get("/search", params={"q": "numpy >=1,<<2"})  # a query that does not parse: the form, saying why
    assert r.status_code == 400 and 'id="search-error"' in r.text


def test_admin_forms(world: UIWorld) -> None:
    admin, member = world.web("admin"), world.web("member")
    name = f"new-{uuid.uuid4().hex[:6]}"
    form = {"username": name, "password": "another-long-password", "csrf_token": csrf_of(member, "/tokens")}
    assert member.post("/admin/users", data=form).status_code == 403  # user:manage, as in the API
    form["csrf_token"] = csrf_of(admin, "/admin/users")
    r = admin.post("/admin/users", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/admin/users"
    assert name in admin.get("/admin/users").text
    assert admin.post("/admin/users", data=form).status_code == 409  # exists: a 409 page
    r = admin.post(f"/admin/users/{name}/state", data={"disabled": "1", "csrf_token": form["csrf_token"]})
    assert r.status_code == 303
    with world.server.client() as c:
        assert c.get(f"/api/users/{name}").json()["disabled"] is True
    group = f"grp-{uuid.uuid4().hex[:6]}"
    assert admin.post("/admin/groups", data={"name": group, "csrf_token": form["csrf_token"]}).status_code == 303
    r = admin.post("/admin/groups/members", data={"group": group, "username": name, "csrf_token": form["csrf_token"]})
    assert r.status_code == 303
    with world.server.client() as c:
        assert group in c.get(f"/api/users/{name}").json()["groups"]
        tok = c.post("/api/tokens", json={"user": world.acc.users["target"], "scopes": [{"scope": "read"}]}).json()
    # another user's token: not found, as in the API
    assert member.post(f"/admin/tokens/{tok['id']}/revoke", data={"csrf_token": csrf_of(member)}).status_code == 404
    r = admin.post(f"/admin/tokens/{tok['id']}/revoke", data={"csrf_token": form["csrf_token"]})
    assert r.status_code == 303
    with world.server.client() as c:
        rows = c.get("/api/tokens", params={"all_users": True}).json()
        assert next(t for t in rows if t["id"] == tok["id"])["revoked_at"] is not None


def test_admin_role_and_grant_forms(world: UIWorld) -> None:
    """Roles and global grants are editable in the UI with the API's permission (``system:admin``) and
    audit; a ``user:manage`` holder sees them but may not change them."""
    srv, acc = world.server, world.acc
    admin, member = world.web("admin"), world.web("member")
    role, user = f"uirole-{uuid.uuid4().hex[:6]}", f"uimgr-{uuid.uuid4().hex[:6]}"
    tok = csrf_of(admin, "/admin/users")
    r = admin.post(
        "/admin/roles",
        data={"name": role, "permissions": ["user:manage"], "description": "managers", "csrf_token": tok},
    )
    assert r.status_code == 303, r.text[:300]
    page = admin.get("/admin/users").text
    assert f'id="role-{role}"' in page and 'id="grant-form"' in page
    r = admin.post(
        f"/admin/roles/{role}",
        data={"permissions": ["user:manage", "audit:read"], "description": "managers and auditors", "csrf_token": tok},
    )
    assert r.status_code == 303
    with srv.client() as c:
        roles = {x["name"]: x for x in c.get("/api/roles").json()}
        assert sorted(roles[role]["permissions"]) == ["audit:read", "user:manage"]
        assert roles[role]["description"] == "managers and auditors"
        ok(c.post("/api/users", json={"username": user, "password": acc.password}))
    # bad input: a precise 4xx page, never a 500
    for bad in ({"name": f"{role}x", "permissions": ["no:such"]}, {"name": "", "permissions": ["user:manage"]}):
        assert admin.post("/admin/roles", data={**bad, "csrf_token": tok}).status_code in (400, 422)
    builtin = admin.post("/admin/roles/viewer", data={"permissions": ["user:manage"], "csrf_token": tok})
    assert builtin.status_code == 400
    assert (
        admin.post("/admin/grants", data={"role": role, "kind": "robot", "who": user, "csrf_token": tok}).status_code
        == 400
    )
    # a global grant from the form makes the user a user manager
    r = admin.post("/admin/grants", data={"role": role, "kind": "user", "who": user, "csrf_token": tok})
    assert r.status_code == 303
    with srv.client() as c:
        assert any(g["role"] == role and g["user"] == user for g in c.get("/api/grants").json())
    mgr = web_login(srv, user, acc.password)
    try:
        page = mgr.get("/admin/users")
        assert page.status_code == 200 and 'id="grant-form"' not in page.text
        assert "needs <code>system:admin" in page.text
        mtok = csrf_of(mgr, "/admin/users")
        # what the API refuses to a user manager, the forms refuse too
        assert (
            mgr.post(
                "/admin/grants", data={"role": "admin", "kind": "user", "who": user, "csrf_token": mtok}
            ).status_code
            == 403
        )
        assert (
            mgr.post(
                "/admin/roles", data={"name": f"{role}-2", "permissions": ["system:admin"], "csrf_token": mtok}
            ).status_code
            == 403
        )
        assert (
            mgr.post(f"/admin/roles/{role}", data={"permissions": ["system:admin"], "csrf_token": mtok}).status_code
            == 403
        )
        assert (
            member.post(
                "/admin/grants",
                data={"role": "admin", "kind": "user", "who": acc.users["member"], "csrf_token": csrf_of(member)},
            ).status_code
            == 403
        )
        # revoked from the form: the page is closed to them again
        r = admin.post(
            "/admin/grants", data={"role": role, "kind": "user", "who": user, "remove": "1", "csrf_token": tok}
        )
        assert r.status_code == 303
        assert mgr.get("/admin/users").status_code == 403
    finally:
        mgr.close()
    assert admin.post(f"/admin/roles/{role}", data={"delete": "1", "csrf_token": tok}).status_code == 303
    with srv.client() as c:
        assert role not in {x["name"] for x in c.get("/api/roles").json()}
        audit = c.get("/api/audit/changes", params={"from": "2000-01-01"}).json()
    actions = {(e["action"], e["target"]) for e in audit if role in json.dumps(e)}
    assert {
        ("role:create", role),
        ("role:update", role),
        ("grant:create", role),
        ("grant:delete", role),
        ("role:delete", role),
    } <= actions, actions


def test_mirror_create_and_edit_forms(world: UIWorld) -> None:
    """A mirror created and re-configured from the UI goes through the API's service: same permissions
    (``mirror:manage`` + ``channel:write``), same validation (a 400 page naming the field), same audit."""
    srv, acc = world.server, world.acc
    admin, member, outsider = world.web("admin"), world.web("member"), world.web("outsider")
    chan, name = f"uimchan-{uuid.uuid4().hex[:6]}", f"uimform-{uuid.uuid4().hex[:6]}"
    srv.channel(chan, "private")
    grant_channel(srv, acc, chan)  # the member's group may read it, not write
    page = admin.get("/mirrors").text
    assert 'id="mirror-form"' in page and f'<option value="{chan}">' in page
    assert 'id="mirror-form"' not in member.get("/mirrors").text  # nothing the member could create
    tok = csrf_of(admin, "/mirrors")
    form = {
        "name": name,
        "upstream": "http://127.0.0.1:9/upstream",
        "channel": chan,
        "subdir": ["noarch", "linux-64"],
        "mode": "active",
        "on_remove": "keep",
        "only_specs": "zlib >=1.2\nnumpy",
        "include_dependencies": "1",
        "exclude_licenses": "GPL-3.0-only",
        "keep_latest": "2",
        "max_size": "50MB",
        "exclude_prereleases": "1",
        "csrf_token": tok,
    }
    for bad, word in (
        ({"only_specs": "numpy >=<1"}, "only_specs"),
        ({"cron": "every day"}, "cron"),
        ({"name": "bad name!"}, "name"),
        ({"keep_latest": "-3"}, "keep_latest"),
        ({"channel": world.priv + "-nope"}, ""),
    ):
        r = admin.post("/mirrors", data={**form, **bad})
        assert r.status_code in (400, 404), (bad, r.status_code)
        assert word in r.text, (bad, r.text[:500])
    # the API's permissions: a reader of the channel may not, an outsider does not even see it
    r = member.post("/mirrors", data={**form, "csrf_token": csrf_of(member)})
    assert r.status_code == 403, r.text[-1500:]
    r = outsider.post("/mirrors", data={**form, "csrf_token": csrf_of(outsider)})
    assert r.status_code == 404 and chan not in r.text
    r = admin.post("/mirrors", data=form)
    assert r.status_code == 303 and r.headers["location"] == f"/mirrors/{name}"
    assert admin.post("/mirrors", data=form).status_code == 409  # exists
    with srv.client() as c:
        cfg = c.get(f"/api/mirrors/{name}").json()
        assert cfg["channel"] == chan and sorted(cfg["subdirs"]) == ["linux-64", "noarch"]
        exported = c.get(f"/api/mirrors/{name}/export").text
    for piece in (
        "zlib >=1.2",
        "numpy",
        "include_dependencies: true",
        "GPL-3.0-only",
        "count: 2",
        "max_size: 50000000",
        "exclude_prereleases: true",
        "on_remove: keep",
    ):
        assert piece in exported, (piece, exported)
    # edit: the mirror page offers its YAML to managers only
    page = admin.get(f"/mirrors/{name}").text
    assert 'id="mirror-config-form"' in page and "zlib &gt;=1.2" in page
    assert 'id="mirror-config-form"' not in member.get(f"/mirrors/{name}").text
    edited = exported.replace("on_remove: keep", "on_remove: keep\ncron: 0 3 * * *")
    mtok = csrf_of(member)
    assert member.post(f"/mirrors/{name}/config", data={"yaml": edited, "csrf_token": mtok}).status_code == 403
    for bad in (edited.replace(f"name: {name}", "name: another"), "name: [unclosed", edited + "\nbogus_key: 1"):
        r = admin.post(f"/mirrors/{name}/config", data={"yaml": bad, "csrf_token": tok})
        assert r.status_code == 400, (bad, r.text[:300])
    r = admin.post(f"/mirrors/{name}/config", data={"yaml": edited, "csrf_token": tok})
    assert r.status_code == 303
    with srv.client() as c:
        assert c.get(f"/api/mirrors/{name}").json()["cron"] == "0 3 * * *"
        audit = c.get("/api/audit/changes", params={"from": "2000-01-01", "action": "mirror:"}).json()
    assert {e["action"] for e in audit if e["target"] == name} == {"mirror:create", "mirror:update"}


def test_package_page_shows_scan_findings_and_signature_outcome(world: UIWorld, tmp_path: Path) -> None:
    srv = world.server
    chan = f"uichecks-{uuid.uuid4().hex[:6]}"
    srv.channel(chan, "public")
    pkg = make_conda(
        tmp_path,
        "uichecked",
        "1.0",
        "0",
        pkg_members=[
            file_member("bin/.uichecked-post-link.sh", b"echo linked"),
            file_member("etc/conda/env_vars.d/uichecked.json", b"this is not json"),
        ],
    )
    ok(srv.upload(chan, pkg))
    with srv.client() as c:
        scan = c.get(f"/api/channels/{chan}/scanning/files/noarch/{pkg.name}").json()["scan"]
        trust = c.get(f"/api/channels/{chan}/files/noarch/{pkg.name}/signature").json()
    assert scan["verdict"] == "suspicious"
    c = world.web("anonymous")
    html = c.get(f"/channels/{chan}/packages/uichecked").text
    checks = html[html.index('id="build-checks"') : html.index("<h3>Dependencies</h3>")]
    assert "verdict-suspicious" in checks and scan["ruleset"] in checks
    for f in scan["findings"]:  # every finding, with its rule and file
        assert f["rule"] in checks and (f["path"] or "") in checks
    assert "env-vars-invalid" in checks and "etc/conda/env_vars.d/uichecked.json" in checks
    assert "post-link" in checks and "env-vars" in checks  # install-time code, linked to has: searches
    assert f'id="trust-status">{trust["status"]}' in checks
    admission = re.search(r'href="([^"]+\.admission\.json)" id="admission-link"', checks)
    assert admission is not None
    r = c.get(admission.group(1))
    assert r.status_code == 200 and r.json()["payloadType"] == "application/vnd.in-toto+json"


def test_search_reindex_button(world: UIWorld) -> None:
    admin, member = world.web("admin"), world.web("member")
    r = admin.post("/admin/search/reindex", data={"csrf_token": csrf_of(admin, "/admin")})
    assert r.status_code == 303 and r.headers["location"].startswith("/admin?queued=")
    assert "is queued as job" in admin.get(r.headers["location"]).text
    assert member.post("/admin/search/reindex", data={"csrf_token": csrf_of(member)}).status_code == 403


def test_channel_management_forms(world: UIWorld) -> None:
    srv, acc = world.server, world.acc
    chan = f"uimanage-{uuid.uuid4().hex[:6]}"
    srv.channel(chan, "private")
    grant_channel(srv, acc, chan)  # chanadmin owns it, member's group views it
    owner = web_login(srv, acc.users["chanadmin"], acc.password)
    member, outsider = world.web("member"), world.web("outsider")
    page = owner.get(f"/channels/{chan}").text
    assert 'id="manage-title"' in page and "viewer: group" in page
    assert 'id="manage-title"' not in member.get(f"/channels/{chan}").text  # a viewer sees no manage form
    form = {"privacy": "private", "description": "managed <b>here</b>", "csrf_token": csrf_of(member)}
    assert member.post(f"/channels/{chan}/settings", data=form).status_code == 403
    form["csrf_token"] = csrf_of(outsider)
    r = outsider.post(f"/channels/{chan}/settings", data=form)
    assert r.status_code == 404 and chan not in r.text
    form["csrf_token"] = csrf_of(owner)
    assert owner.post(f"/channels/{chan}/settings", data=form).status_code == 303
    assert "managed &lt;b&gt;here&lt;/b&gt;" in owner.get(f"/channels/{chan}").text
    # the owner lets the outsider read it: it appears for them
    grant = {"role": "viewer", "kind": "user", "who": acc.users["outsider"], "csrf_token": form["csrf_token"]}
    assert owner.post(f"/channels/{chan}/grants", data=grant).status_code == 303
    assert outsider.get(f"/channels/{chan}").status_code == 200
    assert owner.post(f"/channels/{chan}/grants", data={**grant, "remove": "1"}).status_code == 303
    assert outsider.get(f"/channels/{chan}").status_code == 404
    # nobody hands out what they do not hold: an owner cannot grant "admin"
    r = owner.post(f"/channels/{chan}/grants", data={**grant, "role": "admin"})
    assert r.status_code == 403
    owner.close()


def test_no_database_on_the_event_loop(world: UIWorld) -> None:
    """Pages and forms query the database on worker threads only (as the API does)."""
    import asyncio

    from sqlalchemy import event

    blocked: list[str] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        blocked.append(statement[:80])

    engine = world.server.ctx.db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        world.server.ctx.auth.invalidate()  # session lookups miss the cache
        for who in WHO:
            for url in pages(world).values():
                world.web(who).get(url)
        member = web_login(world.server, world.acc.users["member"], world.acc.password)
        token = csrf_of(member)
        world.server.ctx.auth.invalidate()
        member.post("/tokens", data={"channel": world.priv, "days": "1", "csrf_token": token})
        world.server.ctx.auth.invalidate()
        member.post("/logout", data={"csrf_token": token})
        member.close()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert not blocked, blocked


def test_search_paging_and_facet_links(world: UIWorld, tmp_path: Path) -> None:
    srv = world.server
    chan = f"uipaging-{uuid.uuid4().hex[:6]}"
    srv.channel(chan, "public")
    stem = f"pg{uuid.uuid4().hex[:5]}"
    for i in range(25):
        ok(srv.upload(chan, make_conda(tmp_path, f"{stem}-{i:02d}", "1.0", "0"), wait=False))
    c = world.web("anonymous")

    def names(url: str) -> list[str]:
        r = c.get(url)
        assert r.status_code == 200
        return re.findall(rf'class="hit-name" href="/channels/{chan}/packages/({stem}-\d\d)"', r.text)

    first = wait_for(lambda: len(names(f"/search?q={stem}&sort=name")) == 20 and names(f"/search?q={stem}&sort=name"))
    page = c.get(f"/search?q={stem}&sort=name").text
    assert "Page 1 of 2" in page and 'rel="next"' in page
    second = names(f"/search?q={stem}&sort=name&page=2")
    assert len(second) == 5 and sorted(first + second) == [f"{stem}-{i:02d}" for i in range(25)]
    # a facet value is a link that filters; the filter shows with a link that removes it
    facet = re.search(r'href="(/search\?[^"]*subdir=noarch[^"]*)"', page)
    assert facet is not None
    filtered = c.get(facet.group(1).replace("&amp;", "&")).text
    assert "<strong>noarch</strong>" in filtered and 'aria-label="Remove filter noarch"' in filtered
