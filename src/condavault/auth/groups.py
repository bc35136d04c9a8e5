"""Groups and their members; external (LDAP/OIDC) memberships are synced without touching local ones."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.models import Group, GroupMember, User
from condavault.errors import Conflict, InvalidName, NotFound

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+/-]{0,199}$")


def check_group_name(name: str) -> str:
    if not GROUP_RE.match(name or ""):
        raise InvalidName(f"invalid group name {name!r}", code="invalid_group_name")
    return name


def get_group(session: Session, name: str) -> Group:
    g = session.scalar(select(Group).where(Group.name == name))
    if g is None:
        raise NotFound(f"group {name!r} not found", code="group_not_found", group=name)
    return g


def create_group(session: Session, name: str, description: str = "", source: str = "local") -> Group:
    check_group_name(name)
    if session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise Conflict(f"group {name!r} already exists", code="group_exists", group=name)
    g = Group(name=name, description=description, source=source)
    session.add(g)
    session.flush()
    return g


def delete_group(session: Session, group: Group) -> None:
    session.delete(group)
    session.flush()


def members(session: Session, group: Group) -> list[dict[str, str]]:
    rows = session.execute(
        select(User.username, GroupMember.source)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == group.id)
        .order_by(User.username)
    )
    return [{"username": u, "source": s} for u, s in rows]


def add_member(session: Session, group: Group, user: User, source: str = "local") -> bool:
    row = session.get(GroupMember, (group.id, user.id))
    if row is not None:
        if source == "local" and row.source != "local":
            row.source = "local"  # an admin's explicit membership survives the next sync
        return False
    session.add(GroupMember(group_id=group.id, user_id=user.id, source=source))
    session.flush()
    return True


def remove_member(session: Session, group: Group, user: User) -> bool:
    row = session.get(GroupMember, (group.id, user.id))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def sync_external(session: Session, user: User, names: Iterable[str], source: str) -> dict[str, list[str]]:
    """Make ``user``'s ``source`` memberships exactly ``names`` (groups created on demand).

    Memberships added locally (``source == "local"``) or by another source are left alone.
    """
    wanted = {n for n in names if n}
    rows = session.execute(
        select(Group.name, GroupMember)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user.id)
    )
    current: dict[str, GroupMember] = {row[0]: row[1] for row in rows}
    added, removed = [], []
    for name in sorted(wanted - set(current)):
        g = session.scalar(select(Group).where(Group.name == name))
        if g is None:
            g = Group(name=name, source=source)
            session.add(g)
            session.flush()
        session.add(GroupMember(group_id=g.id, user_id=user.id, source=source))
        added.append(name)
    for name, m in current.items():
        if m.source == source and name not in wanted:
            session.delete(m)
            removed.append(name)
    session.flush()
    return {"added": added, "removed": sorted(removed)}
