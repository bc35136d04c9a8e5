"""Grants: a role given to a user or a group, on one channel or globally (channel None)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.groups import get_group
from condavault.auth.models import Grant, Group, Role, User
from condavault.auth.roles import get_role
from condavault.auth.users import get_user
from condavault.errors import InvalidRequest, NotFound


def _subject(session: Session, user: str | None, group: str | None) -> tuple[int | None, int | None]:
    if bool(user) == bool(group):
        raise InvalidRequest("name exactly one of user or group", code="invalid_grant")
    if user:
        return get_user(session, user).id, None
    return None, get_group(session, group or "").id


def grant(session: Session, role: str, *, user: str | None, group: str | None, channel_id: int | None) -> bool:
    """Give ``role``; returns False when the grant already existed."""
    r = get_role(session, role)
    user_id, group_id = _subject(session, user, group)
    if _find(session, r.id, user_id, group_id, channel_id) is not None:
        return False
    session.add(Grant(role_id=r.id, user_id=user_id, group_id=group_id, channel_id=channel_id))
    session.flush()
    return True


def revoke(session: Session, role: str, *, user: str | None, group: str | None, channel_id: int | None) -> None:
    r = get_role(session, role)
    user_id, group_id = _subject(session, user, group)
    row = _find(session, r.id, user_id, group_id, channel_id)
    if row is None:
        raise NotFound("no such grant", code="grant_not_found")
    session.delete(row)
    session.flush()


def _find(
    session: Session, role_id: int, user_id: int | None, group_id: int | None, channel_id: int | None
) -> Grant | None:
    q = select(Grant).where(Grant.role_id == role_id)
    q = q.where(Grant.user_id == user_id) if user_id is not None else q.where(Grant.user_id.is_(None))
    q = q.where(Grant.group_id == group_id) if group_id is not None else q.where(Grant.group_id.is_(None))
    q = q.where(Grant.channel_id == channel_id) if channel_id is not None else q.where(Grant.channel_id.is_(None))
    return session.scalar(q)


def list_grants(session: Session, channel_id: int | None) -> list[dict[str, object]]:
    q = (
        select(Grant.id, Role.name, User.username, Group.name, Grant.created_at)
        .join(Role, Role.id == Grant.role_id)
        .outerjoin(User, User.id == Grant.user_id)
        .outerjoin(Group, Group.id == Grant.group_id)
    )
    q = q.where(Grant.channel_id == channel_id) if channel_id is not None else q.where(Grant.channel_id.is_(None))
    return [
        {"id": gid, "role": role, "user": u, "group": g, "created_at": at}
        for gid, role, u, g, at in session.execute(q.order_by(Grant.id))
    ]
