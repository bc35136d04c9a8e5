"""Admin pages: users, groups, roles and grants, every token, LDAP/OIDC status, and the audit log (changes and
downloads, filtered, with CSV export through the audit API). Each page calls the API route function behind
it, so it needs exactly the permission the API needs (``user:manage``, ``audit:read``, ...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from condavault.audit import api as audit_api
from condavault.audit import services as audit_svc
from condavault.auth import api as auth_api
from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed, authorize
from condavault.errors import PermissionDenied, Unauthenticated
from condavault.web.ui.common import UIRoute, ctx_of, page_identity, page_url, render

router = APIRouter(route_class=UIRoute, include_in_schema=False)
AUDIT_ROWS = 500


def _any_admin(identity: Identity) -> None:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    if not any(allowed(identity, p) for p in (Permission.USER_MANAGE, Permission.AUDIT_READ, Permission.SYSTEM_ADMIN)):
        raise PermissionDenied(f"{identity.label} may not administer this server")


@router.get("/admin")
def overview(request: Request) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    _any_admin(identity)
    s = ctx.settings
    providers = auth_api.providers(ctx)
    ldap = {"servers": s.ldap.servers, "user_base_dn": s.ldap.user_base_dn, "sync_minutes": s.ldap_sync_minutes} \
        if s.ldap is not None else None
    oidc = {"issuer": s.oidc.issuer, "client_id": s.oidc.client_id} if s.oidc is not None else None
    return render(request, "admin.html", title="Administration", providers=providers, ldap=ldap, oidc=oidc,
                  can_users=allowed(identity, Permission.USER_MANAGE),
                  can_audit=allowed(identity, Permission.AUDIT_READ))


@router.get("/admin/users")
def users(request: Request) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    rows = auth_api.list_users(ctx, identity)
    groups = auth_api.list_groups(ctx, identity)
    roles = auth_api.list_roles(ctx, identity)
    grants = auth_api.global_grants(ctx, identity)
    return render(request, "admin_users.html", title="Users and groups", users=rows, groups=groups, roles=roles,
                  grants=grants)


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
            rows = audit_svc.query_changes(s, start=a, end=b, user=user or None, channel=channel or None,
                                           package=package or None, action=action or None, limit=100_000)
        else:
            rows = audit_svc.query_downloads(s, start=a, end=b, user=user or None, channel=channel or None,
                                             package=package or None, limit=100_000)
    total = len(rows)
    rows = list(reversed(rows[-AUDIT_ROWS:]))  # newest first
    params = {"from": start, "to": end, "user": user, "channel": channel, "package": package}
    if kind == "changes":
        params["action"] = action
    csv_url = page_url(f"/api/audit/{kind}", format="csv", **params)
    return render(request, "admin_audit.html", title="Audit log", kind=kind, rows=rows, total=total, shown=AUDIT_ROWS,
                  params=params, csv_url=csv_url)
