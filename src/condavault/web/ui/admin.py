"""Admin pages: users, groups, roles and grants, every token, LDAP/OIDC status, and the audit log (changes and
downloads, filtered, with CSV export through the audit API). Each page calls the API route function behind
it, so it needs exactly the permission the API needs (``user:manage``, ``audit:read``, ...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from condavault.audit import api as audit_api
from condavault.audit import services as audit_svc
from condavault.auth import admin_api
from condavault.auth import api as auth_api
from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed, authorize
from condavault.auth.schemas import GrantIn, GroupCreate, RoleCreate, RoleUpdate, UserCreate, UserUpdate
from condavault.errors import InvalidRequest, PermissionDenied, Unauthenticated
from condavault.search import api as search_api
from condavault.web.deps import MAX_ID
from condavault.web.ui.common import (
    UIRoute,
    ctx_of,
    field,
    form_identity,
    grant_form,
    page_identity,
    page_url,
    read_form,
    render,
    run_sync,
)

router = APIRouter(route_class=UIRoute, include_in_schema=False)
AUDIT_ROWS = 500


def _any_admin(identity: Identity) -> None:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    if not any(allowed(identity, p) for p in (Permission.USER_MANAGE, Permission.AUDIT_READ, Permission.SYSTEM_ADMIN)):
        raise PermissionDenied(f"{identity.label} may not administer this server")


@router.get("/admin")
def overview(request: Request, queued: int | None = Query(None, ge=1, le=2**62)) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    _any_admin(identity)
    s = ctx.settings
    providers = auth_api.providers(ctx)
    ldap = (
        {"servers": s.ldap.servers, "user_base_dn": s.ldap.user_base_dn, "sync_minutes": s.ldap_sync_minutes}
        if s.ldap is not None
        else None
    )
    oidc = {"issuer": s.oidc.issuer, "client_id": s.oidc.client_id} if s.oidc is not None else None
    return render(
        request,
        "admin.html",
        title="Administration",
        providers=providers,
        ldap=ldap,
        oidc=oidc,
        can_users=allowed(identity, Permission.USER_MANAGE),
        can_audit=allowed(identity, Permission.AUDIT_READ),
        can_system=allowed(identity, Permission.SYSTEM_ADMIN),
        queued=queued,
    )


@router.get("/admin/users")
def users(request: Request) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    rows = admin_api.list_users(ctx, identity)
    groups = admin_api.list_groups(ctx, identity)
    roles = admin_api.list_roles(ctx, identity)
    grants = admin_api.global_grants(ctx, identity)
    return render(
        request,
        "admin_users.html",
        title="Users and groups",
        users=rows,
        groups=groups,
        roles=roles,
        grants=grants,
        permissions=[p.value for p in Permission],
        can_system=allowed(identity, Permission.SYSTEM_ADMIN),
    )


@router.get("/admin/tokens")
def tokens(request: Request) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    rows = auth_api.list_tokens(True, ctx, identity)
    return render(request, "admin_tokens.html", title="All tokens", tokens=list(reversed(rows)))


@router.get("/admin/audit")
def audit(
    request: Request,
    kind: str = Query("changes", pattern="^(changes|downloads)$"),
    start: str = Query("", alias="from", max_length=40),
    end: str = Query("", alias="to", max_length=40),
    user: str = Query("", max_length=200),
    channel: str = Query("", max_length=100),
    package: str = Query("", max_length=200),
    action: str = Query("", max_length=100),
) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    authorize(identity, Permission.AUDIT_READ)
    if not start and not end:
        start = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    a, b = audit_api.parse_when(start, end=False), audit_api.parse_when(end or None, end=True)
    ctx.domains.audit.flush()
    rows: list[dict[str, Any]]
    with ctx.db.session() as s:
        if kind == "changes":
            rows = audit_svc.query_changes(
                s,
                start=a,
                end=b,
                user=user or None,
                channel=channel or None,
                package=package or None,
                action=action or None,
                limit=100_000,
            )
        else:
            rows = audit_svc.query_downloads(
                s, start=a, end=b, user=user or None, channel=channel or None, package=package or None, limit=100_000
            )
    total = len(rows)
    rows = list(reversed(rows[-AUDIT_ROWS:]))  # newest first
    params = {"from": start, "to": end, "user": user, "channel": channel, "package": package}
    if kind == "changes":
        params["action"] = action
    csv_url = page_url(f"/api/audit/{kind}", format="csv", **params)
    return render(
        request,
        "admin_audit.html",
        title="Audit log",
        kind=kind,
        rows=rows,
        total=total,
        shown=AUDIT_ROWS,
        params=params,
        csv_url=csv_url,
    )


# -- changes (each one the API route behind it, with the form's session identity) ----------------------


def _back(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def _check(form: dict[str, list[str]], name: str) -> bool:
    return field(form, name, max_length=10) in ("1", "on", "true")


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    body = UserCreate(
        username=field(form, "username", max_length=200).strip(),
        password=field(form, "password", max_length=1000) or None,
        is_admin=_check(form, "is_admin"),
        display_name=field(form, "display_name", max_length=200) or None,
        email=field(form, "email", max_length=300) or None,
    )
    await run_sync(admin_api.create_user, body, ctx, identity)
    return _back("/admin/users")


@router.post("/admin/users/{username}/state")
async def user_state(request: Request, username: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    disabled = field(form, "disabled", max_length=5) == "1"
    await run_sync(admin_api.update_user, username, UserUpdate(disabled=disabled), ctx, identity)
    return _back("/admin/users")


@router.post("/admin/groups")
async def create_group(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    body = GroupCreate(
        name=field(form, "name", max_length=200).strip(), description=field(form, "description", max_length=2000)
    )
    await run_sync(admin_api.create_group, body, ctx, identity)
    return _back("/admin/users")


@router.post("/admin/groups/members")
async def group_member(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    name = field(form, "group", max_length=200)
    username = field(form, "username", max_length=200).strip()
    if field(form, "remove", max_length=5) == "1":
        await run_sync(admin_api.remove_member, name, username, ctx, identity)
    else:
        await run_sync(admin_api.add_member, name, username, ctx, identity)
    return _back("/admin/users")


def _permissions(form: dict[str, list[str]]) -> list[str]:
    values = form.get("permissions") or []
    if len(values) > 50 or any(len(v) > 100 for v in values):
        raise InvalidRequest("too many or too long permissions", code="invalid_form")
    return values


@router.post("/admin/roles")
async def create_role(request: Request) -> Response:
    """A custom role (``POST /api/roles``: ``system:admin``, audited as ``role:create``)."""
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    body = RoleCreate(
        name=field(form, "name", max_length=100).strip(),
        permissions=_permissions(form),
        description=field(form, "description", max_length=2000),
    )
    await run_sync(admin_api.create_role, body, ctx, identity)
    return _back("/admin/users#roles-title")


@router.post("/admin/roles/{name}")
async def change_role(request: Request, name: str = Path(max_length=100)) -> Response:
    """Change a custom role's permissions and description, or delete it (``delete=1``): ``PATCH`` /
    ``DELETE /api/roles/<name>``, same permission (``system:admin``), same audit."""
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    if field(form, "delete", max_length=5) == "1":
        await run_sync(admin_api.delete_role, name, ctx, identity)
    else:
        body = RoleUpdate(permissions=_permissions(form), description=field(form, "description", max_length=2000))
        await run_sync(admin_api.update_role, name, body, ctx, identity)
    return _back("/admin/users#roles-title")


@router.post("/admin/grants")
async def global_grant(request: Request) -> Response:
    """Grant or revoke (``remove=1``) a role on every channel / the whole server: ``POST`` / ``DELETE
    /api/grants`` (``system:admin``; the last administrator cannot be removed; audited)."""
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    role, user, group, remove = grant_form(form)
    if remove:
        await run_sync(admin_api.global_revoke, role, user, group, ctx, identity)
    else:
        await run_sync(admin_api.global_grant, GrantIn(role=role, user=user, group=group), ctx, identity)
    return _back("/admin/users#grants-title")


@router.post("/admin/search/reindex")
async def search_reindex(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    out = await run_sync(lambda: search_api.reindex(True, ctx, identity))
    return _back(f"/admin?queued={int(out['job'])}")


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: int = Path(ge=1, le=MAX_ID)) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    await run_sync(auth_api.revoke_token, str(token_id), ctx, identity)
    return _back("/admin/tokens")
