"""What a caller hands to someone else, as permissions by channel, for ``policy.authorize_delegation``.

Granting a role hands out the role's permissions (on the channel, or globally); adding a member to a
group hands out the group's grants; minting a token for, or setting the password of, another account
hands out everything that account holds. Channel ids are resolved to ``ChannelRef`` so the one policy
function decides, exactly as it decides requests.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.auth.models import Grant, GroupMember, Role, User
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, authorize_delegation
from condavault.auth.roles import get_role
from condavault.channels.models import Channel

_KNOWN = frozenset(p.value for p in Permission)


def role_permissions(session: Session, role: str) -> set[Permission]:
    return {Permission(p) for p in json.loads(get_role(session, role).permissions) if p in _KNOWN}


def grants_of(
    session: Session, *, user_id: int | None = None, group_id: int | None = None
) -> dict[int | None, set[Permission]]:
    """Permissions granted to a user (``is_admin``, its own grants and its groups') or to a group, by
    channel id (None = global)."""
    out: dict[int | None, set[Permission]] = {}
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None and user.is_admin:
            out[None] = set(Permission)
        groups = list(session.scalars(select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
        cond = Grant.user_id == user_id
        if groups:
            cond = cond | Grant.group_id.in_(groups)
    else:
        cond = Grant.group_id == group_id
    for channel_id, perms in session.execute(
        select(Grant.channel_id, Role.permissions).join(Role, Role.id == Grant.role_id).where(cond)
    ):
        out.setdefault(channel_id, set()).update(Permission(p) for p in json.loads(perms) if p in _KNOWN)
    return out


def check_delegation(session: Session, identity: Identity, grants: dict[int | None, set[Permission]]) -> None:
    """``policy.authorize_delegation`` for grants keyed by channel id."""
    ids = [cid for cid in grants if cid is not None]
    refs: dict[int | None, ChannelRef | None] = {None: None}
    if ids:
        for cid, name, privacy in session.execute(
            select(Channel.id, Channel.name, Channel.privacy).where(Channel.id.in_(ids))
        ):
            refs[cid] = ChannelRef(cid, name, privacy)
    authorize_delegation(identity, {refs[cid]: perms for cid, perms in grants.items() if cid in refs})
