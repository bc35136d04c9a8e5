"""Roles: named sets of typed permissions. Built-ins are fixed; custom roles come from the API/CLI."""

from __future__ import annotations

import json
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.models import Role
from condavault.auth.permissions import parse_permissions
from condavault.errors import Conflict, InvalidName, InvalidRequest, NotFound

ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")


def role_view(r: Role) -> dict[str, object]:
    return {
        "name": r.name,
        "permissions": json.loads(r.permissions),
        "builtin": r.builtin,
        "description": r.description,
    }


def get_role(session: Session, name: str) -> Role:
    r = session.scalar(select(Role).where(Role.name == name))
    if r is None:
        raise NotFound(f"role {name!r} not found", code="role_not_found", role=name)
    return r


def list_roles(session: Session) -> list[Role]:
    return list(session.scalars(select(Role).order_by(Role.builtin.desc(), Role.name)))


def create_role(session: Session, name: str, permissions: list[str], description: str = "") -> Role:
    if not ROLE_RE.match(name or ""):
        raise InvalidName(f"invalid role name {name!r}: lower-case letters, digits, _ and -", code="invalid_role_name")
    if session.scalar(select(Role.id).where(Role.name == name)) is not None:
        raise Conflict(f"role {name!r} already exists", code="role_exists", role=name)
    perms = parse_permissions(permissions)
    if not perms:
        raise InvalidRequest("a role needs at least one permission", code="invalid_permission")
    r = Role(name=name, permissions=json.dumps(sorted(p.value for p in perms)), builtin=False, description=description)
    session.add(r)
    session.flush()
    return r


def update_role(session: Session, r: Role, permissions: list[str] | None, description: str | None) -> Role:
    if r.builtin:
        raise InvalidRequest(f"built-in role {r.name!r} cannot be changed", code="builtin_role")
    if permissions is not None:
        perms = parse_permissions(permissions)
        if not perms:
            raise InvalidRequest("a role needs at least one permission", code="invalid_permission")
        r.permissions = json.dumps(sorted(p.value for p in perms))
    if description is not None:
        r.description = description
    session.flush()
    return r


def delete_role(session: Session, r: Role) -> None:
    if r.builtin:
        raise InvalidRequest(f"built-in role {r.name!r} cannot be deleted", code="builtin_role")
    session.delete(r)
    session.flush()
