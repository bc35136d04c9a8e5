"""Log in (local and LDAP through the password form, OIDC through the API's redirect flow), log out, and the
token page that issues a read token and shows the ``.condarc`` and pixi snippets for it."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime, timedelta

import yaml
from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response

from condavault.auth import api as auth_api
from condavault.auth.schemas import ScopeIn, TokenCreate
from condavault.auth.sessions import CSRF_COOKIE, SESSION_COOKIE, cookie_kwargs
from condavault.channels.services import ChannelService
from condavault.errors import InvalidRequest, PermissionDenied, RateLimited, Unauthenticated
from condavault.web.deps import MAX_ID
from condavault.web.ui.common import (
    LOGIN_CSRF_COOKIE,
    UIRoute,
    base_url,
    ctx_of,
    field,
    form_identity,
    new_login_csrf,
    page_identity,
    read_form,
    render,
    run_sync,
)

router = APIRouter(route_class=UIRoute, include_in_schema=False)


def _login_page(
    request: Request, next_: str, error: str | None = None, username: str = "", status: int = 200
) -> Response:
    ctx = ctx_of(request)
    csrf = new_login_csrf()
    providers = auth_api.providers(ctx)
    resp = render(
        request,
        "login.html",
        status=status,
        title="Log in",
        next=auth_api._safe_next(next_),
        login_csrf=csrf,
        error=error,
        username=username,
        providers=providers,
    )
    resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, **cookie_kwargs(request.url.scheme == "https", 3600))
    return resp


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    page_identity(request)
    return _login_page(request, next[:2000])


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    sent = field(form, "csrf_token", max_length=200)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        raise PermissionDenied("the login form expired; reload the page", code="csrf_failed")
    auth_api._check_origin(request)
    username = field(form, "username", max_length=200)
    password = field(form, "password", max_length=1000)
    next_ = auth_api._safe_next(field(form, "next", "/"))
    svc = auth_api._login_svc(ctx)
    ip = auth_api._client_ip(request)
    try:
        who = await run_sync(svc.password_login, username, password, ip)
    except (Unauthenticated, RateLimited) as exc:
        return _login_page(request, next_, exc.message, username, status=exc.status)
    response = RedirectResponse(next_, status_code=303)
    if request.cookies.get(SESSION_COOKIE):  # a session this browser had ends (no session fixation)
        await run_sync(ctx.domains.auth.sessions.end, request.cookies.get(SESSION_COOKIE))
        ctx.auth.invalidate()
    await run_sync(lambda: auth_api._finish_login(ctx, request, response, who, False, ""))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    try:
        await run_sync(form_identity, request, form)
    except Unauthenticated:
        pass  # already logged out: just clear the cookies
    await run_sync(ctx.domains.auth.sessions.end, request.cookies.get(SESSION_COOKIE))
    ctx.auth.invalidate()
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


def _tokens_page(request: Request, created: dict[str, object] | None = None) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    tokens = auth_api.list_tokens(False, ctx, identity)  # 401 (-> login) for anonymous callers
    channels = ChannelService(ctx).list_readable(identity)
    return render(request, "tokens.html", title="Tokens", tokens=tokens, channels=channels, created=created)


@router.get("/tokens")
def tokens_page(request: Request) -> Response:
    return _tokens_page(request)


def snippets(url: str, token: str, channels: list[str]) -> dict[str, str]:
    """The same snippets as ``condavault client-config --with-token`` (condarc and pixi)."""
    base = f"{url}/api/repo/t/{token}"
    condarc = "# ~/.condarc (conda, mamba)\n" + yaml.safe_dump(
        {"channel_alias": base, "channels": list(channels)}, sort_keys=False
    )
    pixi = "# pixi.toml\n[workspace]\nchannels = [" + ", ".join(json.dumps(f"{base}/{c}") for c in channels) + "]\n"
    return {"condarc": condarc, "pixi": pixi}


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    channels = [c for c in form.get("channel", []) if c][:100]
    if not channels:
        raise InvalidRequest("choose at least one channel", code="invalid_form")
    try:
        days = int(field(form, "days", "90", max_length=5))
    except ValueError:
        raise InvalidRequest("days must be a whole number", code="invalid_form")
    if not 1 <= days <= 3650:
        raise InvalidRequest("days must be between 1 and 3650", code="invalid_form")
    name = field(form, "name", max_length=200) or f"web {' '.join(channels)}"[:200]
    for c in channels:  # only channels the caller may read (the same error as the API otherwise)
        await run_sync(ctx.channels.for_read, identity, c)
    expires = datetime.now(UTC) + timedelta(days=days)
    body = TokenCreate(name=name, scopes=[ScopeIn(scope="read", channels=channels)], expires_at=expires)
    out = await run_sync(auth_api.create_token, body, ctx, identity)
    created = {
        "token": out.token,
        "channels": channels,
        "expires": expires.date().isoformat(),
        **snippets(base_url(request), out.token, channels),
    }
    return await run_sync(_tokens_page, request, created)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: int = Path(ge=1, le=MAX_ID)) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    await run_sync(auth_api.revoke_token, str(token_id), ctx, identity)
    return RedirectResponse("/tokens", status_code=303)
