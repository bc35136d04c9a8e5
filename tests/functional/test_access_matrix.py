"""Every route of the application x every kind of caller x every channel privacy: zero leaks.

The routes are enumerated from the application itself, so a route another domain adds later is
covered automatically: channel-scoped GET routes and ``/api/mirrors*`` / ``/api/cves*`` routes are
checked generically; every other route needs an entry in ``EXPECT`` or ``test_every_route_has_an_
expectation`` fails (nobody can add an unchecked route).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from condavault.web import ui
from tests.support.accounts import (
    IDENTITIES,
    INVALID,
    PRIVACIES,
    Accounts,
    grant_channel,
    make_accounts,
    may,
    ok,
    repo_paths,
)
from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel

PKG = "noarch/dependency-1.0-0.conda"
GENERIC_PREFIXES = ("/api/mirrors", "/api/cves")
REPO_ROUTE = "/api/repo/{path:path}"
# the web UI's pages (HTML; a hidden channel is a 404 page): tests/functional/test_ui_http.py checks each
UI_PATHS = {r.path for router in ui.ROUTERS for r in router.routes} | {"/static"}  # type: ignore[attr-defined]


@dataclass
class World:
    server: Server
    acc: Accounts
    channels: dict[str, str]
    repo: dict[str, dict[str, str]]
    package: Path
    upstream: str = ""
    mirrors: dict[str, str] = field(default_factory=dict)  # privacy -> mirror feeding that channel
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        """One client per identity (building an httpx client costs ~80 ms of TLS set-up)."""
        if who not in self.clients:
            self.clients[who] = httpx.Client(base_url=self.server.url, headers=self.acc.headers(who), timeout=120)
        return self.clients[who]

    def fresh(self) -> str:
        return f"mx{uuid.uuid4().hex[:10]}"

    def fresh_channel(self, privacy: str) -> str:
        name = self.fresh()
        self.server.channel(name, privacy)
        grant_channel(self.server, self.acc, name)
        return name

    def admin(self) -> httpx.Client:
        return self.server.client()

    def mirror_config(self, name: str, privacy: str) -> dict[str, Any]:
        """A mirror that mirrors nothing (its filter matches no package) and removes nothing."""
        return {
            "name": name,
            "upstream": self.upstream,
            "channel": self.channels[privacy],
            "subdirs": ["noarch"],
            "on_remove": "keep",
            "filters": {"only_specs": ["mx-nothing-matches"]},
        }


@pytest.fixture(scope="module")
def world(shared_server: Server, packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = shared_server
    acc = make_accounts(srv, "mx")
    channels = {}
    for p in PRIVACIES:
        name = f"mx-{p}"
        srv.channel(name, p)
        ok(srv.upload(name, packages_dir / PKG))
        grant_channel(srv, acc, name)
        channels[p] = name
    with srv.client() as c:
        ok(c.post("/api/groups", json={"name": "mx-empty"}))
        ok(c.post("/api/roles", json={"name": "mx-custom", "permissions": ["channel:read"]}))
    repo = {p: repo_paths(srv, channels[p], packages_dir / PKG) for p in PRIVACIES}
    root = build_channel(packages_dir, tmp_path_factory.mktemp("mx-up"), subdirs=("noarch",), names={"dependency"})
    with StaticChannel(root) as upstream:
        w = World(srv, acc, channels, repo, packages_dir / PKG, upstream=upstream.url)
        with srv.client() as c:
            for p in PRIVACIES:
                w.mirrors[p] = f"mx-m-{p}"
                ok(c.post("/api/mirrors", json=w.mirror_config(w.mirrors[p], p)))
        yield w
    for c in w.clients.values():
        c.close()


# -- the expectation table -------------------------------------------------------------------------
# perm: public (never looks at credentials) | any (anonymous or a valid credential) | auth (a valid
# credential) | admin (a global permission: users, groups, roles, audit, ...) | read/write/manage (on
# the channel in the path) | hidden (another user's object: 404 for everyone but admins) |
# generic (mirrors/CVEs: admin-only or read-filtered).

Build = Callable[[World, str, str | None], dict[str, Any]]


def _none(_w: World, _who: str, _p: str | None) -> dict[str, Any]:
    return {}


def _chan(w: World, _who: str, p: str | None) -> dict[str, Any]:
    return {"name": w.channels[p or "public"]}


def _with(extra: dict[str, Any]) -> Build:
    def build(w: World, who: str, p: str | None) -> dict[str, Any]:
        return {"name": w.channels[p or "public"], **extra}

    return build


def _fresh_if_allowed(kind: str) -> Build:
    """Destructive calls hit a throwaway object when the caller is allowed to do them."""

    def build(w: World, who: str, p: str | None) -> dict[str, Any]:
        if kind == "channel":
            return {
                "name": w.fresh_channel(p or "public")
                if may(who, "manage", p or "public")
                else w.channels[p or "public"]
            }
        allowed = who == "admin"
        with w.admin() as c:
            if kind == "user":
                name = w.fresh() if allowed else w.acc.users["target"]
                if allowed:
                    ok(c.post("/api/users", json={"username": name}))
                return {"username": name}
            if kind == "group":
                name = w.fresh() if allowed else w.acc.group
                if allowed:
                    ok(c.post("/api/groups", json={"name": name}))
                return {"name": name}
            if kind == "role":
                name = w.fresh() if allowed else "mx-custom"
                if allowed:
                    ok(c.post("/api/roles", json={"name": name, "permissions": ["channel:read"]}))
                return {"name": name}
            if kind == "token":  # always someone else's token (the admin's)
                r = c.post("/api/tokens", json={"scopes": [{"scope": "read"}], "name": "matrix"})
                ok(r)
                return {"token_or_id": str(r.json()["id"])}
        raise AssertionError(kind)

    return build


def _body(build: Build, **kw: Any) -> Build:
    def wrapped(w: World, who: str, p: str | None) -> dict[str, Any]:
        out = dict(build(w, who, p))
        for key, value in kw.items():
            out[key] = value(w) if callable(value) else value
        return out

    return wrapped


NOFILE = ["noarch/nonexistent-9.9-0.conda"]


def _admin_job(w: World) -> int:
    """A job the admin started (a queued reindex of the public channel)."""
    with w.admin() as c:
        r = c.post(f"/api/channels/{w.channels['public']}/reindex", params={"wait": False})
        ok(r)
        return int(r.json()["job_id"])


def _mirror(extra: dict[str, Any] | None = None) -> Build:
    def build(w: World, _who: str, p: str | None) -> dict[str, Any]:
        return {"name": w.mirrors[p or "public"], **(extra or {})}

    return build


def _mirror_put(w: World, _who: str, p: str | None) -> dict[str, Any]:
    name = w.mirrors[p or "public"]
    return {"name": name, "json": w.mirror_config(name, p or "public")}


def _mirror_new(w: World, _who: str, p: str | None) -> dict[str, Any]:
    return {"json": w.mirror_config(w.fresh(), p or "public")}


def _mirror_apply(w: World, _who: str, p: str | None) -> dict[str, Any]:
    import yaml

    return {"json": {"yaml": yaml.safe_dump(w.mirror_config(w.fresh(), p or "public"))}}


def _mirror_fresh_if_allowed(w: World, who: str, p: str | None) -> dict[str, Any]:
    if who != "admin":
        return {"name": w.mirrors[p or "public"]}
    name = w.fresh()
    with w.admin() as c:
        ok(c.post("/api/mirrors", json=w.mirror_config(name, p or "public")))
    return {"name": name}


CURATE = {"status": "active", "reason": "matrix", "package": "dependency"}

EXPECT: dict[tuple[str, str], tuple[str, Build]] = {
    # system
    ("GET", "/healthz"): ("public", _none),
    ("GET", "/api/signing/key"): ("public", _none),  # the server's public key: anyone may verify statements
    ("GET", "/readyz"): ("public", _none),
    ("GET", "/metrics"): ("public", _none),
    ("GET", "/api/openapi.json"): ("public", _none),
    ("GET", "/api/docs"): ("public", _none),
    ("GET", "/docs/oauth2-redirect"): ("public", _none),
    # channels
    ("GET", "/api/channels"): ("any", _none),
    ("POST", "/api/channels"): ("admin", _body(_none, json=lambda w: {"name": w.fresh(), "privacy": "private"})),
    ("GET", "/api/channels/{name}"): ("read", _chan),
    ("PATCH", "/api/channels/{name}"): ("manage", _body(_chan, json={"description": "matrix"})),
    ("DELETE", "/api/channels/{name}"): ("manage", _fresh_if_allowed("channel")),
    ("GET", "/api/channels/{name}/files"): ("read", _chan),
    ("GET", "/api/channels/{name}/packages/{package}/dependants"): ("read", _with({"package": "dependency"})),
    ("POST", "/api/channels/{name}/files"): (
        "write",
        _body(_chan, params={"filename": Path(PKG).name}, content=lambda w: w.package.read_bytes()),
    ),
    ("POST", "/api/channels/{name}/files/remove"): ("write", _body(_chan, json={"files": NOFILE})),
    ("POST", "/api/channels/{name}/files/copy"): (
        "write",
        lambda w, who, p: {
            "name": w.channels[p or "public"],
            "json": {"files": NOFILE, "to": w.channels[p or "public"]},
        },
    ),
    ("POST", "/api/channels/{name}/subdirs/{subdir}/import"): (
        "write",
        _body(_with({"subdir": "noarch"}), json={"packages": {}, "packages.conda": {}}),
    ),
    ("GET", "/api/channels/{name}/subdirs/{subdir}/patch-instructions"): ("read", _with({"subdir": "noarch"})),
    ("PUT", "/api/channels/{name}/subdirs/{subdir}/patch-instructions"): (
        "manage",
        _body(_with({"subdir": "noarch"}), json={}),
    ),
    ("POST", "/api/channels/{name}/reindex"): ("manage", _chan),
    # upload batches (a batch that does not exist: 404 for whoever may write)
    ("POST", "/api/channels/{name}/uploads"): ("write", _chan),
    ("GET", "/api/channels/{name}/uploads/{batch}"): ("write", _with({"batch": "mx-nobatch"})),
    ("POST", "/api/channels/{name}/uploads/{batch}/files"): (
        "write",
        _body(_with({"batch": "mx-nobatch"}), params={"filename": Path(PKG).name}, content=b"x"),
    ),
    ("POST", "/api/channels/{name}/uploads/{batch}/commit"): ("write", _with({"batch": "mx-nobatch"})),
    # jobs: every kind, from any process; another user's job is hidden
    ("GET", "/api/bundles"): ("admin", _none),
    ("POST", "/api/bundles/scan"): ("admin", _none),
    ("GET", "/api/jobs"): ("auth", _none),
    ("GET", "/api/jobs/schedules"): ("admin", _none),
    ("GET", "/api/jobs/{job_id}"): ("hidden", lambda w, who, p: {"job_id": _admin_job(w)}),
    ("POST", "/api/jobs/{job_id}/cancel"): ("hidden", lambda w, who, p: {"job_id": _admin_job(w)}),
    # grants
    ("GET", "/api/channels/{name}/grants"): ("manage", _chan),
    ("POST", "/api/channels/{name}/grants"): (
        "manage",
        lambda w, who, p: {**_chan(w, who, p), "json": {"role": "viewer", "group": w.acc.group}},
    ),
    ("DELETE", "/api/channels/{name}/grants"): ("manage", _body(_chan, params={"role": "viewer", "group": "mx-empty"})),
    ("GET", "/api/grants"): ("admin", _none),
    ("POST", "/api/grants"): ("admin", _body(_none, json={"role": "viewer", "group": "mx-empty"})),
    ("DELETE", "/api/grants"): ("admin", _body(_none, params={"role": "viewer", "group": "mx-empty"})),
    # identity, tokens, login
    ("GET", "/api/whoami"): ("any", _none),
    ("POST", "/api/tokens"): ("auth", _body(_none, json={"scopes": [{"scope": "read"}]})),
    ("GET", "/api/tokens"): ("auth", _none),
    ("DELETE", "/api/tokens/{token_or_id}"): ("hidden", _fresh_if_allowed("token")),
    ("POST", "/api/auth/login"): (
        "public",
        lambda w, who, p: {"json": {"username": w.acc.users["target"], "password": w.acc.password}},
    ),
    ("POST", "/api/auth/logout"): ("any", _none),
    ("GET", "/api/auth/providers"): ("public", _none),
    ("GET", "/api/auth/oidc/login"): ("public", _none),  # not configured here: 404 for everyone
    ("GET", "/api/auth/oidc/callback"): ("public", _none),
    ("POST", "/api/auth/oidc/device"): ("public", _none),
    ("POST", "/api/auth/oidc/device/poll"): ("public", _body(_none, json={"handle": "x"})),
    # users, groups, roles
    ("GET", "/api/users"): ("admin", _none),
    ("POST", "/api/users"): ("admin", _body(_none, json=lambda w: {"username": w.fresh(), "password": w.acc.password})),
    ("GET", "/api/users/{username}"): ("admin", lambda w, who, p: {"username": w.acc.users["target"]}),
    ("PATCH", "/api/users/{username}"): (
        "admin",
        lambda w, who, p: {"username": w.acc.users["target"], "json": {"display_name": "Target"}},
    ),
    ("POST", "/api/users/{username}/password"): (
        "admin",
        lambda w, who, p: {"username": w.acc.users["target"], "json": {"password": w.acc.password}},
    ),
    ("DELETE", "/api/users/{username}"): ("admin", _fresh_if_allowed("user")),
    ("GET", "/api/groups"): ("admin", _none),
    ("POST", "/api/groups"): ("admin", _body(_none, json=lambda w: {"name": w.fresh()})),
    ("GET", "/api/groups/{name}"): ("admin", lambda w, who, p: {"name": w.acc.group}),
    ("DELETE", "/api/groups/{name}"): ("admin", _fresh_if_allowed("group")),
    ("PUT", "/api/groups/{name}/members/{username}"): (
        "admin",
        lambda w, who, p: {"name": w.acc.group, "username": w.acc.users["member"]},
    ),
    ("DELETE", "/api/groups/{name}/members/{username}"): (
        "admin",
        lambda w, who, p: {"name": w.acc.group, "username": w.acc.users["outsider"]},
    ),
    ("GET", "/api/roles"): ("auth", _none),
    ("POST", "/api/roles"): (
        "admin",
        _body(_none, json=lambda w: {"name": w.fresh(), "permissions": ["channel:read"]}),
    ),
    ("PATCH", "/api/roles/{name}"): ("admin", lambda w, who, p: {"name": "mx-custom", "json": {"description": "m"}}),
    ("DELETE", "/api/roles/{name}"): ("admin", _fresh_if_allowed("role")),
    # audit
    ("GET", "/api/audit/downloads"): ("admin", _none),
    ("GET", "/api/audit/changes"): ("admin", _none),
    # scanning: quarantine review (quarantine:review, held by administrators), block list and rescans
    # (system administrators), a channel's scan policy (its managers); verdicts follow channel reads
    ("GET", "/api/quarantine"): ("admin", _none),
    ("GET", "/api/quarantine/{qid}"): ("admin", _with({"qid": 999999})),
    ("POST", "/api/quarantine/{qid}/release"): ("admin", _with({"qid": 999999})),
    ("DELETE", "/api/quarantine/{qid}"): ("admin", _with({"qid": 999999})),
    ("POST", "/api/scanning/blocklist"): ("admin", _body(_none, content=b"# nothing to block\n")),
    ("DELETE", "/api/scanning/blocklist/{sha256}"): ("admin", _with({"sha256": "0" * 64})),
    ("POST", "/api/scanning/rescan"): ("admin", _body(_none, json={"limit": 1})),
    ("GET", "/api/channels/{name}/scanning/policy"): ("manage", _chan),
    ("PUT", "/api/channels/{name}/scanning/policy"): ("manage", _body(_chan, json={"quarantine_suspicious": False})),
    # vulnerabilities: evaluate an environment against readable channels only
    ("POST", "/api/check-env"): ("generic", _body(_none, json=lambda w: {"channels": list(w.channels.values())})),
    # mirrors: readable with their channel (hidden -- 404 -- from anyone else), managed by mirror:manage + write
    ("GET", "/api/mirrors"): ("any", _none),
    ("POST", "/api/mirrors"): ("mirror-create", _mirror_new),
    ("POST", "/api/mirrors/apply"): ("mirror-create", _mirror_apply),
    ("GET", "/api/mirrors/{name}"): ("mirror-read", _mirror()),
    ("PUT", "/api/mirrors/{name}"): ("mirror-manage", _mirror_put),
    ("DELETE", "/api/mirrors/{name}"): ("mirror-manage", _mirror_fresh_if_allowed),
    ("GET", "/api/mirrors/{name}/export"): ("mirror-read", _mirror()),
    ("POST", "/api/mirrors/{name}/plan"): ("mirror-manage", _mirror()),
    ("POST", "/api/mirrors/{name}/runs"): ("mirror-manage", _mirror()),
    ("GET", "/api/mirrors/{name}/runs"): ("mirror-read", _mirror()),
    ("GET", "/api/mirrors/{name}/runs/{run_id}"): ("mirror-read", _mirror({"run_id": 1})),
    ("POST", "/api/mirrors/{name}/cancel"): ("mirror-manage", _mirror()),
    ("GET", "/api/mirrors/{name}/explain"): ("mirror-read", _mirror({"params": {"q": "dependency"}})),
    ("GET", "/api/mirrors/{name}/items"): ("mirror-read", _mirror()),
    # CVE data: read-filtered for everyone, changed by administrators and curators only; sync jobs
    ("GET", "/api/cves"): ("any", _none),
    ("GET", "/api/cves/report"): ("any", _none),
    ("GET", "/api/cves/history"): ("any", _none),
    ("GET", "/api/cves/{ident}"): ("any", lambda w, who, p: {"ident": "CVE-2022-37434"}),
    ("GET", "/api/cves/{ident}/files"): ("any", lambda w, who, p: {"ident": "CVE-2022-37434"}),
    ("GET", "/api/cves/{ident}/history"): ("any", lambda w, who, p: {"ident": "CVE-2022-37434"}),
    ("POST", "/api/cves/sync"): ("admin", _body(_none, json={"sources": []})),
    ("GET", "/api/cves/sync/jobs/{job_id}"): ("admin", lambda w, who, p: {"job_id": "mx-no-such-job"}),
    ("POST", "/api/cves/sweep"): ("admin", _none),
    ("POST", "/api/cves/curate/bulk"): ("admin", _body(_none, json={"items": [{**CURATE, "advisory": "CVE-0-0"}]})),
    ("POST", "/api/cves/{ident}/curate"): ("admin", lambda w, who, p: {"ident": "CVE-0-0", "json": CURATE}),
    # vulnerability sources (where feeds come from) and forgetting one: system administrators only
    ("GET", "/api/cves/sources"): ("admin", _none),
    ("DELETE", "/api/cves/sources/{source_id}"): ("admin", _with({"source_id": 999999})),
    # search: anyone; results, facets and suggestions only from readable channels (the leak check below)
    ("GET", "/api/search"): ("any", _with({"params": {"q": "dependency"}})),
    ("GET", "/api/search/provides"): ("any", _with({"params": {"path": "info/index.json"}})),
    ("POST", "/api/search/reindex"): ("admin", _none),
}


def find_app(obj: Any, depth: int = 0) -> Any:
    """The FastAPI application behind the ASGI callable uvicorn runs (middleware and test wrappers
    are unwrapped through ``.app`` attributes and closures)."""
    if hasattr(obj, "routes") and hasattr(obj, "router"):
        return obj
    assert depth < 5, "cannot find the application"
    inner = getattr(obj, "app", None)
    if inner is not None:
        return find_app(inner, depth + 1)
    for cell in getattr(obj, "__closure__", None) or ():
        value = cell.cell_contents
        if hasattr(value, "routes") and hasattr(value, "router"):
            return value
    raise AssertionError(f"cannot find the application behind {obj!r}")


def app_routes(server: Server) -> list[tuple[str, str]]:
    """(method, path) of every route the running application serves."""
    app = find_app(server._server.config.app)  # type: ignore[union-attr]
    try:
        from fastapi.routing import iter_route_contexts

        contexts = list(iter_route_contexts(app.routes))
    except ImportError:  # older FastAPI: routes are flat
        contexts = list(app.routes)
    out = []
    for rc in contexts:
        methods = getattr(rc, "methods", None) or {"GET"}
        for m in sorted(methods - {"HEAD", "OPTIONS"}):
            out.append((m, rc.path))
    return sorted(set(out))


def classify(method: str, path: str) -> tuple[str, Build] | None:
    if (method, path) in EXPECT:
        return EXPECT[(method, path)]
    if path == REPO_ROUTE:
        return ("repo", _none)  # test_repo_matrix
    if path in UI_PATHS:
        return ("ui", _none)  # test_ui_http.py
    if path.startswith(GENERIC_PREFIXES):
        return ("generic", _none)
    if method == "GET" and path.startswith("/api/channels/{name}/"):
        return ("read", _with({"subdir": "noarch", "filename": Path(PKG).name}))
    return None


def test_every_route_has_an_expectation(shared_server: Server) -> None:
    missing = [f"{m} {p}" for m, p in app_routes(shared_server) if classify(m, p) is None]
    assert not missing, "routes without an access expectation (add them to EXPECT): " + ", ".join(missing)


def _fill(path: str, values: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1).split(":")[0]
        return str(values.get(key, f"mx-unknown-{key}"))

    return re.sub(r"\{([^}]+)\}", sub, path)


def _call(w: World, method: str, path: str, who: str, build: Build, privacy: str | None) -> httpx.Response:
    spec = build(w, who, privacy)
    kwargs = {k: spec.pop(k) for k in ("json", "params", "content") if k in spec}
    c = w.client(who)
    c.cookies.clear()  # a login answer's session cookie must not change who the next call is
    return c.request(method, _fill(path, spec), **kwargs)


def _expected_denial(who: str) -> int:
    return 401 if who == "anonymous" or who in INVALID else 403


def check(w: World, method: str, path: str, who: str, perm: str, r: httpx.Response, privacy: str | None) -> None:
    where = f"{method} {path} as {who}" + (f" on a {privacy} channel" if privacy else "")
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    denied = r.status_code in (401, 403)
    if perm == "public":
        assert not denied, f"{where}: public route answered {r.status_code}"
    elif perm == "any":
        assert denied == (who in INVALID), f"{where}: {r.status_code} {r.text[:200]}"
        if denied:
            assert r.status_code == 401
    elif perm == "auth":
        if who == "anonymous" or who in INVALID:
            assert r.status_code == 401, f"{where}: {r.status_code}"
        else:
            assert not denied, f"{where}: {r.status_code} {r.text[:200]}"
    elif perm == "admin":
        if who == "admin":
            assert not denied, f"{where}: {r.status_code} {r.text[:200]}"
        else:
            assert r.status_code == _expected_denial(who), f"{where}: {r.status_code} {r.text[:200]}"
    elif perm == "hidden":
        if who == "admin":
            assert r.status_code == 200, f"{where}: {r.status_code}"
        elif who == "anonymous" or who in INVALID:
            assert r.status_code == 401, f"{where}: {r.status_code}"
        else:
            assert r.status_code == 404, f"{where}: {r.status_code}"
    elif perm in ("read", "write", "manage"):
        assert privacy is not None
        if may(who, perm, privacy):
            assert not denied, f"{where}: {r.status_code} {r.text[:200]}"
        else:
            assert r.status_code == _expected_denial(who), f"{where}: {r.status_code} {r.text[:200]}"
    elif perm in ("mirror-read", "mirror-manage", "mirror-create"):
        assert privacy is not None
        readable = may(who, "read", privacy)
        if who in INVALID:
            assert r.status_code == 401, f"{where}: {r.status_code}"
        elif (perm == "mirror-read" and readable) or (perm != "mirror-read" and who == "admin"):
            assert not denied and "mirror_not_found" not in r.text, f"{where}: {r.status_code} {r.text[:200]}"
        elif perm == "mirror-create" or readable:
            assert r.status_code == _expected_denial(who), f"{where}: {r.status_code} {r.text[:200]}"
        else:  # a mirror of a channel the caller may not read does not exist for them
            assert r.status_code == 404 and r.json()["error"]["code"] == "mirror_not_found", f"{where}: {r.text}"
            assert w.channels[privacy] not in r.text, f"{where}: names the hidden channel"
    elif perm == "generic":
        if who in INVALID:
            assert r.status_code == 401, f"{where}: {r.status_code}"
        elif who != "admin" and method != "GET":
            # an object that does not exist may be reported missing (nothing to reveal); anything
            # else a non-admin asks to change must be refused
            allowed = (401, 403, 422, 404) if "{" in path else (401, 403, 422)
            assert r.status_code in allowed, f"{where}: a non-admin change answered {r.status_code}"
    else:  # pragma: no cover
        raise AssertionError(perm)
    # read-filtered answers never name a channel the caller may not read
    if r.status_code == 200 and perm in ("any", "auth", "generic", "public", "admin"):
        for privacy_, name in w.channels.items():
            if not may(who, "read", privacy_):
                assert name not in r.text, f"{where}: leaks channel {name!r}"


def test_route_matrix(world: World) -> None:
    """One item per database (xdist would otherwise build the world on every worker)."""
    for who in IDENTITIES:
        _route_matrix(world, who)


def _route_matrix(world: World, who: str) -> None:
    checked = 0
    for method, path in app_routes(world.server):
        spec = classify(method, path)
        assert spec is not None, f"{method} {path} has no expectation"
        perm, build = spec
        if perm in ("repo", "ui"):
            continue
        channel_scoped = ("{name}" in path and path.startswith(("/api/channels/", "/api/mirrors/"))) or (
            perm.startswith("mirror-")
        )
        for privacy in PRIVACIES if channel_scoped else (None,):
            r = _call(world, method, path, who, build, privacy)
            check(world, method, path, who, perm, r, privacy)
            checked += 1
    assert checked > 50


def test_repo_matrix(world: World) -> None:
    """repodata.json, .zst, shard index, a shard, the package and channeldata — header and /t/ forms."""
    for who in IDENTITIES:
        for privacy in PRIVACIES:
            _repo_matrix(world, who, privacy)


def _repo_matrix(world: World, who: str, privacy: str) -> None:
    tok = world.acc.tokens[who]
    forms = [("header", world.client(who), "")]
    if tok:
        forms.append(("url", world.client("anonymous"), f"t/{tok}/"))
    for form, c, prefix in forms:
        for kind, path in world.repo[privacy].items():
            for method in ("GET", "HEAD"):
                r = c.request(method, f"/api/repo/{prefix}{path}")
                where = f"{method} {kind} of a {privacy} channel as {who} ({form})"
                if may(who, "read", privacy):
                    assert r.status_code == 200, f"{where}: {r.status_code} {r.text[:200]}"
                else:
                    assert r.status_code == _expected_denial(who), f"{where}: {r.status_code}"
                    assert "dependency" not in r.text and not r.headers.get("etag"), f"{where}: leaks content"


def test_channel_listing_hides_what_the_caller_may_not_read(world: World) -> None:
    for who in IDENTITIES:
        r = world.client(who).get("/api/channels")
        if who in INVALID:
            assert r.status_code == 401
            continue
        names = {ch["name"] for ch in r.json()}
        for privacy, name in world.channels.items():
            assert (name in names) == may(who, "read", privacy), f"{who} sees {sorted(names)}"


def test_private_and_missing_channels_are_indistinguishable(world: World) -> None:
    """To anyone who may not read it, a private channel looks exactly like one that does not exist."""
    private = world.channels["private"]
    for who in ("anonymous", "outsider", "member"):
        c = world.client(who)
        target = private if who != "member" else "mx-nope-2"  # member may read mx-private
        for suffix in ("noarch/repodata.json", "channeldata.json", "noarch/x-1-0.conda"):
            a = c.get(f"/api/repo/{target}/{suffix}")
            b = c.get(f"/api/repo/mx-nope/{suffix}")
            assert a.status_code == b.status_code == _expected_denial(who)
            assert a.json()["error"]["code"] == b.json()["error"]["code"]
            assert a.json()["error"]["message"].replace(target, "X") == b.json()["error"]["message"].replace(
                "mx-nope", "X"
            )
        a, b = c.get(f"/api/channels/{target}"), c.get("/api/channels/mx-nope")
        assert a.status_code == b.status_code == _expected_denial(who)


def test_all_credential_forms(world: World) -> None:
    """Bearer, Basic (password = token, or pip's <token>:x-auth-token), X-Auth and /t/<token>/."""
    tok = world.acc.tokens["member"]
    assert tok
    path = world.repo["private"]["repodata.json"]
    base = world.server.repo
    forms: list[dict[str, Any]] = [
        {"headers": {"Authorization": f"Bearer {tok}"}},
        {"auth": ("someone", tok)},
        {"auth": (tok, "x-auth-token")},
        {"headers": {"X-Auth": tok}},
    ]
    for kw in forms:
        assert httpx.get(f"{base}/{path}", **kw).status_code == 200, kw
    assert httpx.get(f"{base}/t/{tok}/{path}").status_code == 200
    assert httpx.get(f"{base}/t/cv-bogus-token/{path}").status_code == 401
    assert httpx.get(f"{base}/{path}", auth=("someone", "wrong")).status_code == 401


def test_role_granting_matrix(world: World) -> None:
    """Who may grant which role on a channel: managers only, and only roles within what they hold."""
    target = world.acc.users["target"]
    for who in IDENTITIES:
        for privacy in PRIVACIES:
            channel = world.channels[privacy]
            c = world.client(who)
            for role in ("viewer", "owner", "admin"):
                r = c.post(f"/api/channels/{channel}/grants", json={"role": role, "user": target})
                where = f"grant {role} on a {privacy} channel as {who}"
                if who == "admin" or (who == "chanadmin" and role != "admin"):
                    assert r.status_code == 201, f"{where}: {r.status_code} {r.text[:200]}"
                    with world.admin() as a:
                        ok(a.delete(f"/api/channels/{channel}/grants", params={"role": role, "user": target}))
                elif who == "chanadmin":  # manages the channel, but lacks what the admin role carries
                    assert r.status_code == 403 and r.json()["error"]["code"] == "delegation_denied", where
                else:
                    assert r.status_code == _expected_denial(who), f"{where}: {r.status_code}"
