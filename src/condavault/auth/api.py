"""REST routes of the auth domain: login/sessions/SSO, tokens, users, groups, roles and grants.

Thin: parse, authorise through ``auth.policy``, call one service, record the change, shape.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from itsdangerous import BadSignature
from sqlalchemy import select
from starlette.responses import RedirectResponse

from condavault.auth import grants as grant_svc
from condavault.auth import groups as group_svc
from condavault.auth import roles as role_svc
from condavault.auth import users as user_svc
from condavault.auth.admins import ensure_admin_remains
from condavault.auth.delegation import check_delegation, grants_of, role_permissions
from condavault.auth.identity import Identity
from condavault.auth.login import LoginService
from condavault.auth.models import Group, Token, User
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.auth.schemas import (
    DevicePoll,
    DeviceResult,
    DeviceStart,
    GrantIn,
    GrantOut,
    GroupCreate,
    GroupOut,
    LoginIn,
    LoginOut,
    PasswordIn,
    RoleCreate,
    RoleOut,
    RoleUpdate,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
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


def _authenticated(identity: Identity) -> None:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")


def _full_account(identity: Identity) -> None:
    """Managing tokens needs a session or an unrestricted ``api`` token (a read token mints nothing)."""
    _authenticated(identity)
    if identity.scopes is not None and not any(s.unrestricted for s in identity.scopes):
        raise PermissionDenied("this token's scopes do not allow managing tokens", code="insufficient_scope")


def _change(ctx: Context, identity: Identity, action: str, target: str, before: Any = None, after: Any = None) -> None:
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
    _authenticated(identity)
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
    _change(ctx, identity, "token:revoke", f"{out.user}/{out.prefix}")
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


# -- users -------------------------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], summary="All accounts")
def list_users(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[UserOut]:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.session() as s:
        return [UserOut(**user_svc.user_view(s, u)) for u in s.scalars(select(User).order_by(User.username))]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a local or service account")
def create_user(body: UserCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> UserOut:
    authorize(identity, Permission.USER_MANAGE)
    if body.is_admin:
        authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        u = user_svc.create_user(
            s,
            body.username,
            password=body.password,
            is_admin=body.is_admin,
            is_service=body.is_service,
            email=body.email,
            display_name=body.display_name,
        )
        out = UserOut(**user_svc.user_view(s, u))
    _change(ctx, identity, "user:create", body.username, None, out.model_dump(mode="json", exclude={"groups"}))
    return out


def _self_or_manager(identity: Identity, username: str) -> None:
    _authenticated(identity)
    if identity.username != username:
        authorize(identity, Permission.USER_MANAGE)


@router.get("/users/{username}", response_model=UserOut, summary="One account")
def show_user(username: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> UserOut:
    _self_or_manager(identity, username)
    with ctx.db.session() as s:
        return UserOut(**user_svc.user_view(s, user_svc.get_user(s, username)))


@router.patch("/users/{username}", response_model=UserOut, summary="Disable/enable, admin flag, profile")
def update_user(username: str, body: UserUpdate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> UserOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        u = user_svc.get_user(s, username)
        before = UserOut(**user_svc.user_view(s, u)).model_dump(mode="json")
        if (body.is_admin is not None and body.is_admin != u.is_admin) or u.is_admin:
            authorize(identity, Permission.SYSTEM_ADMIN)
        if body.disabled is not None:
            if body.disabled and u.id == identity.user_id:
                raise InvalidRequest("you cannot disable yourself", code="self_disable")
            if not body.disabled and u.disabled:  # enabling an account hands its permissions back out
                check_delegation(s, identity, grants_of(s, user_id=u.id))
            user_svc.set_disabled(s, u, body.disabled)
        if body.is_admin is not None:
            u.is_admin = body.is_admin
        if body.email is not None:
            u.email = body.email
        if body.display_name is not None:
            u.display_name = body.display_name
        ensure_admin_remains(s)
        out = UserOut(**user_svc.user_view(s, u))
    _change(ctx, identity, "user:update", username, before, out.model_dump(mode="json"))
    return out


@router.post("/users/{username}/password", status_code=204, summary="Set a password (own, or reset by an admin)")
def set_password(username: str, body: PasswordIn, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    _self_or_manager(identity, username)
    with ctx.db.write_session() as s:
        u = user_svc.get_user(s, username)
        if identity.username == username and not identity.granted(Permission.USER_MANAGE, None):
            if not user_svc.verify_password(u.password_hash, body.current_password or ""):
                raise PermissionDenied("the current password is wrong", code="wrong_password")
        elif identity.username != username:
            if u.is_admin:
                authorize(identity, Permission.SYSTEM_ADMIN)
            check_delegation(s, identity, grants_of(s, user_id=u.id))  # a password is the whole account
        user_svc.set_password(s, u, body.password)
    _change(ctx, identity, "user:password", username)
    return Response(status_code=204)


@router.delete("/users/{username}", status_code=204, summary="Delete an account (its tokens go with it)")
def delete_user(username: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        u = user_svc.get_user(s, username)
        if u.is_admin:
            authorize(identity, Permission.SYSTEM_ADMIN)
        if u.id == identity.user_id:
            raise InvalidRequest("you cannot delete yourself", code="self_delete")
        user_svc.delete_user(s, u)
        ensure_admin_remains(s)
    _change(ctx, identity, "user:delete", username)
    return Response(status_code=204)


# -- groups ------------------------------------------------------------------------------------


def _group_out(s: Any, g: Group) -> GroupOut:
    return GroupOut(name=g.name, source=g.source, description=g.description, members=group_svc.members(s, g))


@router.get("/groups", response_model=list[GroupOut], summary="Groups and their members")
def list_groups(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[GroupOut]:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.session() as s:
        return [_group_out(s, g) for g in s.scalars(select(Group).order_by(Group.name))]


@router.post("/groups", response_model=GroupOut, status_code=201, summary="Create a group")
def create_group(body: GroupCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GroupOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        out = _group_out(s, group_svc.create_group(s, body.name, body.description))
    _change(ctx, identity, "group:create", body.name, None, body.model_dump())
    return out


@router.get("/groups/{name}", response_model=GroupOut, summary="One group")
def show_group(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GroupOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.session() as s:
        return _group_out(s, group_svc.get_group(s, name))


@router.delete("/groups/{name}", status_code=204, summary="Delete a group (its grants go with it)")
def delete_group(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        g = group_svc.get_group(s, name)
        before = _group_out(s, g).model_dump()
        group_svc.delete_group(s, g)
        ensure_admin_remains(s)
    _change(ctx, identity, "group:delete", name, before)
    return Response(status_code=204)


@router.put("/groups/{name}/members/{username}", response_model=GroupOut, summary="Add a member")
def add_member(name: str, username: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GroupOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        g = group_svc.get_group(s, name)
        check_delegation(s, identity, grants_of(s, group_id=g.id))  # joining a group hands out its grants
        group_svc.add_member(s, g, user_svc.get_user(s, username))
        out = _group_out(s, g)
    _change(ctx, identity, "group:add-member", name, None, {"user": username})
    return out


@router.delete("/groups/{name}/members/{username}", response_model=GroupOut, summary="Remove a member")
def remove_member(name: str, username: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GroupOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        g = group_svc.get_group(s, name)
        if not group_svc.remove_member(s, g, user_svc.get_user(s, username)):
            raise NotFound(f"{username!r} is not a member of {name!r}", code="member_not_found")
        ensure_admin_remains(s)
        out = _group_out(s, g)
    _change(ctx, identity, "group:remove-member", name, {"user": username}, None)
    return out


# -- roles -------------------------------------------------------------------------------------


@router.get("/roles", response_model=list[RoleOut], summary="Roles and their permissions")
def list_roles(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[RoleOut]:
    _authenticated(identity)
    with ctx.db.session() as s:
        return [RoleOut(**role_svc.role_view(r)) for r in role_svc.list_roles(s)]  # type: ignore[arg-type]


@router.post("/roles", response_model=RoleOut, status_code=201, summary="Create a custom role")
def create_role(body: RoleCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> RoleOut:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        out = RoleOut(**role_svc.role_view(role_svc.create_role(s, body.name, body.permissions, body.description)))  # type: ignore[arg-type]
    _change(ctx, identity, "role:create", body.name, None, out.model_dump())
    return out


@router.patch("/roles/{name}", response_model=RoleOut, summary="Change a custom role")
def update_role(name: str, body: RoleUpdate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> RoleOut:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        r = role_svc.get_role(s, name)
        before = role_svc.role_view(r)
        out = RoleOut(**role_svc.role_view(role_svc.update_role(s, r, body.permissions, body.description)))  # type: ignore[arg-type]
        ensure_admin_remains(s)
    _change(ctx, identity, "role:update", name, before, out.model_dump())
    return out


@router.delete("/roles/{name}", status_code=204, summary="Delete a custom role (and its grants)")
def delete_role(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        r = role_svc.get_role(s, name)
        before = role_svc.role_view(r)
        role_svc.delete_role(s, r)
        ensure_admin_remains(s)
    _change(ctx, identity, "role:delete", name, before)
    return Response(status_code=204)


# -- grants ------------------------------------------------------------------------------------


@router.get("/channels/{name}/grants", response_model=list[GrantOut], summary="Who has which role on a channel")
def channel_grants(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[GrantOut]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    with ctx.db.session() as s:
        return [GrantOut(**g) for g in grant_svc.list_grants(s, ref.id)]  # type: ignore[arg-type]


@router.post("/channels/{name}/grants", response_model=GrantOut, status_code=201, summary="Grant a role on a channel")
def channel_grant(name: str, body: GrantIn, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GrantOut:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    with ctx.db.write_session() as s:
        check_delegation(s, identity, {ref.id: role_permissions(s, body.role)})
        grant_svc.grant(s, body.role, user=body.user, group=body.group, channel_id=ref.id)
        out = _grant_out(s, ref.id, body)
    _change(ctx, identity, "channel:grant", name, None, body.model_dump())
    return out


def _grant_out(s: Any, channel_id: int | None, body: GrantIn) -> GrantOut:
    for g in grant_svc.list_grants(s, channel_id):
        if g["role"] == body.role and g["user"] == body.user and g["group"] == body.group:
            return GrantOut(**g)  # type: ignore[arg-type]
    raise NotFound("no such grant", code="grant_not_found")


@router.delete("/channels/{name}/grants", status_code=204, summary="Revoke a role on a channel")
def channel_revoke(
    name: str,
    role: str = Query(...),
    user: str | None = None,
    group: str | None = None,
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    with ctx.db.write_session() as s:
        check_delegation(s, identity, {ref.id: role_permissions(s, role)})  # nor take away what it could not give
        grant_svc.revoke(s, role, user=user, group=group, channel_id=ref.id)
    _change(ctx, identity, "channel:revoke", name, {"role": role, "user": user, "group": group}, None)
    return Response(status_code=204)


@router.get("/grants", response_model=list[GrantOut], summary="Global grants (every channel, or non-channel roles)")
def global_grants(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[GrantOut]:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.session() as s:
        return [GrantOut(**g) for g in grant_svc.list_grants(s, None)]  # type: ignore[arg-type]


@router.post("/grants", response_model=GrantOut, status_code=201, summary="Grant a role globally")
def global_grant(body: GrantIn, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GrantOut:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        check_delegation(s, identity, {None: role_permissions(s, body.role)})
        grant_svc.grant(s, body.role, user=body.user, group=body.group, channel_id=None)
        out = _grant_out(s, None, body)
    _change(ctx, identity, "grant:create", body.role, None, body.model_dump())
    return out


@router.delete("/grants", status_code=204, summary="Revoke a global grant")
def global_revoke(
    role: str = Query(...),
    user: str | None = None,
    group: str | None = None,
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        grant_svc.revoke(s, role, user=user, group=group, channel_id=None)
        ensure_admin_remains(s)
    _change(ctx, identity, "grant:delete", role, {"user": user, "group": group}, None)
    return Response(status_code=204)
