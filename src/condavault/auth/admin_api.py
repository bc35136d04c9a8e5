"""REST routes of the auth domain's administration: users, groups, roles and grants.

Thin: parse, authorise through ``auth.policy``, call one service, record the change, shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from condavault.auth import grants as grant_svc
from condavault.auth import groups as group_svc
from condavault.auth import roles as role_svc
from condavault.auth import users as user_svc
from condavault.auth.admins import ensure_admin_remains
from condavault.auth.api import authenticated_only, record_change
from condavault.auth.delegation import check_delegation, grants_of, role_permissions
from condavault.auth.identity import Identity
from condavault.auth.models import Group, User
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.auth.schemas import (
    GrantIn,
    GrantOut,
    GroupCreate,
    GroupOut,
    PasswordIn,
    RoleCreate,
    RoleOut,
    RoleUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from condavault.context import Context
from condavault.errors import InvalidRequest, NotFound, PermissionDenied
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api", tags=["auth"])


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
    record_change(ctx, identity, "user:create", body.username, None, out.model_dump(mode="json", exclude={"groups"}))
    return out


def _self_or_manager(identity: Identity, username: str) -> None:
    authenticated_only(identity)
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
    record_change(ctx, identity, "user:update", username, before, out.model_dump(mode="json"))
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
    record_change(ctx, identity, "user:password", username)
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
    record_change(ctx, identity, "user:delete", username)
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
    record_change(ctx, identity, "group:create", body.name, None, body.model_dump())
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
    record_change(ctx, identity, "group:delete", name, before)
    return Response(status_code=204)


@router.put("/groups/{name}/members/{username}", response_model=GroupOut, summary="Add a member")
def add_member(name: str, username: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> GroupOut:
    authorize(identity, Permission.USER_MANAGE)
    with ctx.db.write_session() as s:
        g = group_svc.get_group(s, name)
        check_delegation(s, identity, grants_of(s, group_id=g.id))  # joining a group hands out its grants
        group_svc.add_member(s, g, user_svc.get_user(s, username))
        out = _group_out(s, g)
    record_change(ctx, identity, "group:add-member", name, None, {"user": username})
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
    record_change(ctx, identity, "group:remove-member", name, {"user": username}, None)
    return out


# -- roles -------------------------------------------------------------------------------------


@router.get("/roles", response_model=list[RoleOut], summary="Roles and their permissions")
def list_roles(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[RoleOut]:
    authenticated_only(identity)
    with ctx.db.session() as s:
        return [RoleOut(**role_svc.role_view(r)) for r in role_svc.list_roles(s)]  # type: ignore[arg-type]


@router.post("/roles", response_model=RoleOut, status_code=201, summary="Create a custom role")
def create_role(body: RoleCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> RoleOut:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        out = RoleOut(**role_svc.role_view(role_svc.create_role(s, body.name, body.permissions, body.description)))  # type: ignore[arg-type]
    record_change(ctx, identity, "role:create", body.name, None, out.model_dump())
    return out


@router.patch("/roles/{name}", response_model=RoleOut, summary="Change a custom role")
def update_role(name: str, body: RoleUpdate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> RoleOut:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        r = role_svc.get_role(s, name)
        before = role_svc.role_view(r)
        out = RoleOut(**role_svc.role_view(role_svc.update_role(s, r, body.permissions, body.description)))  # type: ignore[arg-type]
        ensure_admin_remains(s)
    record_change(ctx, identity, "role:update", name, before, out.model_dump())
    return out


@router.delete("/roles/{name}", status_code=204, summary="Delete a custom role (and its grants)")
def delete_role(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> Response:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.write_session() as s:
        r = role_svc.get_role(s, name)
        before = role_svc.role_view(r)
        role_svc.delete_role(s, r)
        ensure_admin_remains(s)
    record_change(ctx, identity, "role:delete", name, before)
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
    record_change(ctx, identity, "channel:grant", name, None, body.model_dump())
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
    record_change(ctx, identity, "channel:revoke", name, {"role": role, "user": user, "group": group}, None)
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
    record_change(ctx, identity, "grant:create", body.role, None, body.model_dump())
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
    record_change(ctx, identity, "grant:delete", role, {"user": user, "group": group}, None)
    return Response(status_code=204)
