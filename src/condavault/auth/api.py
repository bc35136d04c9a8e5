"""REST routes of the auth domain: login/sessions/SSO and tokens (users, groups, roles and grants: ``admin_api``).

Thin: parse, authorise through ``auth.policy``, call one service, record the change, shape.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from itsdangerous import BadSignature
from sqlalchemy import select
from starlette.responses import RedirectResponse

from condavault.auth import users as user_svc
from condavault.auth.delegation import check_delegation, grants_of
from condavault.auth.identity import Identity
from condavault.auth.login import LoginService
from condavault.auth.models import Token, User
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.auth.schemas import (
    DevicePoll,
    DeviceResult,
    DeviceStart,
    LoginIn,
    LoginOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    WhoAmI,
)
from condavault.auth.services import find_token, issue_token
from condavault.auth.sessions import CSRF_COOKIE, SESSION_COOKIE, SessionManager, cookie_kwargs
from condavault.context import Context
from condavault.db.base import utcnow
from condavault.errors import InvalidRequest, NotFound, PermissionDenied, Unauthenticated
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api", tags=["auth"])
OIDC_COOKIE = "condavault_oidc"


def authenticated_only(identity: Identity) -> None:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")


def _full_account(identity: Identity) -> None:
    """Managing tokens needs a session or an unrestricted ``api`` token (a read token mints nothing)."""
    authenticated_only(identity)
    if identity.scopes is not None and not any(s.unrestricted for s in identity.scopes):
        raise PermissionDenied("this token's scopes do not allow managing tokens", code="insufficient_scope")


def record_change(
    ctx: Context, identity: Identity, action: str, target: str, before: Any = None, after: Any = None
) -> None:
    ctx.auth.invalidate()
    ctx.record_change(identity, action, target, before, after)


def _login_svc(ctx: Context) -> LoginService:
    return ctx.domains.auth.login


def _sessions(ctx: Context) -> SessionManager:
    return ctx.domains.auth.sessions


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# -- who am I, tokens --------------------------------------------------------------------------


@router.get("/whoami", response_model=WhoAmI)
def whoami(identity: Identity = IdentityDep) -> WhoAmI:
    return WhoAmI(
        authenticated=identity.authenticated,
        username=identity.username,
        is_admin=identity.is_admin,
        token_id=identity.token_id,
        scopes=[s.to_dict() for s in identity.scopes] if identity.scopes else None,
    )


@router.post("/tokens", response_model=TokenCreated, status_code=201, summary="Create a token (shown once)")
def create_token(body: TokenCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> TokenCreated:
    _full_account(identity)
    with ctx.db.write_session() as s:
        if body.user and body.user != identity.username:
            authorize(identity, Permission.USER_MANAGE)
            other = user_svc.get_user(s, body.user)
            if other.is_admin:
                authorize(identity, Permission.SYSTEM_ADMIN)
            user = other
            check_delegation(s, identity, grants_of(s, user_id=user.id))  # a token acts as its owner
        else:
            me = s.get(User, identity.user_id)
            assert me is not None
            user = me
        if user.disabled:
            raise InvalidRequest(f"user {user.username!r} is disabled", code="user_disabled")
        token, row = issue_token(
            s,
            user,
            [sc.model_dump() for sc in body.scopes],
            name=body.name,
            expires_at=body.expires_at,
            created_by=identity.username,
        )
        out = TokenCreated(**TokenOut.of(row, user.username).model_dump(), token=token)
    ctx.record_change(
        identity,
        "token:create",
        f"{user.username}/{out.prefix}",
        None,
        {"scopes": out.scopes, "expires_at": str(out.expires_at)},
    )
    return out


@router.get("/tokens", response_model=list[TokenOut], summary="Tokens of the caller (all tokens for admins)")
def list_tokens(all_users: bool = False, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[TokenOut]:
    _full_account(identity)
    with ctx.db.session() as s:
        q = select(Token, User.username).join(User, User.id == Token.user_id)
        if all_users:
            authorize(identity, Permission.USER_MANAGE)
        else:
            q = q.where(Token.user_id == identity.user_id)
        return [TokenOut.of(t, u) for t, u in s.execute(q.order_by(Token.id))]


@router.delete("/tokens/{token_or_id}", response_model=TokenOut, summary="Revoke a token (effective at once)")
def revoke_token(token_or_id: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> TokenOut:
    authenticated_only(identity)
    with ctx.db.write_session() as s:
        row = find_token(s, token_or_id)
        if row.user_id == identity.user_id and row.id != identity.token_id:
            _full_account(identity)  # a restricted (read/upload) token may revoke itself, not its siblings
        if row.user_id != identity.user_id:
            try:
                _full_account(identity)
                authorize(identity, Permission.USER_MANAGE)
            except (PermissionDenied, Unauthenticated):
                raise NotFound("token not found", code="token_not_found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        user = s.get(User, row.user_id)
        out = TokenOut.of(row, user.username if user else "?")
    record_change(ctx, identity, "token:revoke", f"{out.user}/{out.prefix}")
    return out


# -- password login, sessions ------------------------------------------------------------------


def _start_session(ctx: Context, request: Request, response: Response, user_id: int) -> str:
    cookie, csrf = _sessions(ctx).create(user_id, ip=_client_ip(request), user_agent=request.headers.get("user-agent"))
    max_age = ctx.settings.session_max_age
    response.set_cookie(SESSION_COOKIE, cookie, **cookie_kwargs(_secure(request), max_age))
    response.set_cookie(CSRF_COOKIE, csrf, **cookie_kwargs(_secure(request), max_age, http_only=False))
    return csrf


def _check_origin(request: Request) -> None:
    """Refuse cross-site form posts to the login endpoints (login CSRF)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise PermissionDenied("cross-site request refused", code="csrf_failed")


@router.post("/auth/login", response_model=LoginOut, summary="Password login (local, then LDAP): session cookie")
def login(body: LoginIn, request: Request, response: Response, ctx: Context = CtxDep) -> Any:
    _check_origin(request)
    svc = _login_svc(ctx)
    who = svc.password_login(body.username, body.password, _client_ip(request))  # 429 carries Retry-After
    return _finish_login(ctx, request, response, who, body.issue_token, body.token_name)


def _finish_login(
    ctx: Context, request: Request, response: Response, who: Any, want_token: bool, name: str
) -> LoginOut:
    out = LoginOut(username=who.username, source=who.source)
    if want_token:
        out.token, out.token_expires_at = _cli_token(ctx, who.user_id, name)
    else:
        out.csrf_token = _start_session(ctx, request, response, who.user_id)
    ctx.record_change(
        Identity(user_id=who.user_id, username=who.username), "auth:login", who.username, None, {"source": who.source}
    )
    return out


def _cli_token(ctx: Context, user_id: int, name: str) -> tuple[str, datetime]:
    expires = datetime.now(UTC) + timedelta(days=ctx.settings.cli_login_token_days)
    with ctx.db.write_session() as s:
        user = s.get(User, user_id)
        assert user is not None
        token, _row = issue_token(
            s, user, [{"scope": "api"}], name=name[:200], expires_at=expires, created_by=user.username
        )
    return token, expires


@router.post("/auth/logout", status_code=204, summary="End the web session")
def logout(request: Request, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    _sessions(ctx).end(request.cookies.get(SESSION_COOKIE))
    ctx.auth.invalidate()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/auth/providers", summary="Which login methods this server offers")
def providers(ctx: Context = CtxDep) -> dict[str, bool]:
    svc = _login_svc(ctx)
    return {"password": True, "ldap": svc.ldap is not None, "oidc": svc.oidc is not None}


# -- OpenID Connect ----------------------------------------------------------------------------


def _oidc(ctx: Context) -> Any:
    backend = _login_svc(ctx).oidc
    if backend is None:
        raise NotFound("single sign-on is not configured", code="oidc_not_configured")
    return backend


def _callback_url(ctx: Context, request: Request) -> str:
    base = (ctx.settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/api/auth/oidc/callback"


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/auth/oidc/login", summary="Start single sign-on in the browser (redirects to the provider)")
def oidc_login(request: Request, next: str | None = None, ctx: Context = CtxDep) -> RedirectResponse:
    url, state = _oidc(ctx).start_login(_callback_url(ctx, request))
    signed = _sessions(ctx).oidc_signer.dumps({**state.to_dict(), "next": _safe_next(next)})
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(OIDC_COOKIE, signed, **cookie_kwargs(_secure(request), 600))
    return response


@router.get("/auth/oidc/callback", summary="Where the provider sends the browser back")
def oidc_callback(request: Request, ctx: Context = CtxDep) -> Response:
    from condavault.auth.backends.oidc import LoginState

    backend = _oidc(ctx)
    try:
        saved = _sessions(ctx).oidc_signer.loads(request.cookies.get(OIDC_COOKIE, ""), max_age=600)
        state = LoginState.from_dict(saved)
    except (BadSignature, KeyError, TypeError):
        raise Unauthenticated("single sign-on expired or was started elsewhere; start again", code="invalid_state")
    ext = backend.finish_login(dict(request.query_params), state, _callback_url(ctx, request))
    who = _login_svc(ctx).provision(ext)
    response = RedirectResponse(_safe_next(saved.get("next")), status_code=303)
    _finish_login(ctx, request, response, who, False, "")
    response.delete_cookie(OIDC_COOKIE, path="/")
    return response


@router.post("/auth/oidc/device", response_model=DeviceStart, summary="Start a CLI single sign-on (device flow)")
def oidc_device(ctx: Context = CtxDep) -> DeviceStart:
    dev = _oidc(ctx).start_device()
    return DeviceStart(
        handle=_sessions(ctx).oidc_signer.dumps({"device_code": dev.device_code}),
        user_code=dev.user_code,
        verification_uri=dev.verification_uri,
        verification_uri_complete=dev.verification_uri_complete,
        interval=dev.interval,
        expires_in=dev.expires_in,
    )


@router.post("/auth/oidc/device/poll", response_model=DeviceResult, summary="Poll a CLI single sign-on")
def oidc_device_poll(body: DevicePoll, request: Request, ctx: Context = CtxDep) -> DeviceResult:
    backend = _oidc(ctx)
    try:
        data = _sessions(ctx).oidc_signer.loads(body.handle, max_age=1800)
        device_code = data["device_code"]
    except (BadSignature, KeyError, TypeError):
        raise Unauthenticated("unknown or expired device login", code="invalid_state")
    ext = backend.poll_device(device_code)
    if ext is None:
        return DeviceResult(status="pending")
    who = _login_svc(ctx).provision(ext)
    token, expires = _cli_token(ctx, who.user_id, "sso-login")
    ctx.record_change(
        Identity(user_id=who.user_id, username=who.username),
        "auth:login",
        who.username,
        None,
        {"source": "oidc", "device": True},
    )
    return DeviceResult(status="done", username=who.username, token=token, token_expires_at=expires)
