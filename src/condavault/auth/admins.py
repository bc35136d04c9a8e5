"""The last enabled administrator, and granted permissions seen as a whole.

An administrator is an enabled account holding ``system:admin`` globally: the ``is_admin`` flag, or a
global grant of a role carrying it (to the account or to one of its groups). A change that would leave
none -- demoting, disabling or deleting an account, revoking a grant, removing a group member, deleting
a group or role, narrowing a role -- is refused (409 ``last_admin``) inside its own transaction, so it
never lands. ``condavault admin recover`` (offline, on the server machine) is the way back if one is
lost anyway (e.g. through LDAP group changes).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.models import Grant, GroupMember, Role, User
from condavault.auth.permissions import Permission
from condavault.errors import LastAdmin


def admin_role_ids(session: Session) -> list[int]:
    return [
        rid
        for rid, perms in session.execute(select(Role.id, Role.permissions))
        if Permission.SYSTEM_ADMIN.value in json.loads(perms)
    ]


def enabled_admins(session: Session) -> set[int]:
    """Ids of the enabled accounts holding ``system:admin`` globally."""
    enabled = select(User.id).where(User.disabled.is_(False))
    ids = set(session.scalars(enabled.where(User.is_admin.is_(True))))
    roles = admin_role_ids(session)
    if roles:
        global_admin = (Grant.role_id.in_(roles), Grant.channel_id.is_(None))
        direct = set(session.scalars(select(Grant.user_id).where(*global_admin, Grant.user_id.is_not(None))))
        via_groups = set(
            session.scalars(
                select(GroupMember.user_id).join(Grant, Grant.group_id == GroupMember.group_id).where(*global_admin)
            )
        )
        candidates = (direct | via_groups) - ids
        if candidates:
            ids |= set(session.scalars(enabled.where(User.id.in_(candidates))))
    return ids


def ensure_admin_remains(session: Session) -> None:
    """Call after a change (in its transaction): refuse it if no enabled administrator is left."""
    session.flush()
    if not enabled_admins(session):
        raise LastAdmin(
            "this change would leave no enabled administrator; make another account an administrator first",
        )


def recover_admin(session: Session, username: str, password: str | None = None) -> tuple[str, User]:
    """Make ``username`` an enabled administrator again (creating it if it does not exist: the built-in
    ``admin`` as the system account, any other name as a local one), optionally set its password, and
    issue a fresh unrestricted token. Returns ``(token, user)``. For ``condavault admin recover``."""
    from condavault.auth import users as user_svc
    from condavault.auth.services import SYSTEM_ADMIN, ensure_builtin_roles, issue_token, system_admin

    ensure_builtin_roles(session)
    user = system_admin(session) if username == SYSTEM_ADMIN else user_svc.find_user(session, username)
    if user is None:
        user = user_svc.create_user(session, username)
    user.is_admin = True
    user.disabled = False
    if password is not None:
        user.password_hash = user_svc.hash_password(password)
        user_svc.revoke_sessions(session, user.id)
    token, _row = issue_token(session, user, [{"scope": "api"}], name="recover", created_by="condavault admin recover")
    return token, user
