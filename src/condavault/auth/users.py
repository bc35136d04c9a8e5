"""Local accounts: argon2 password hashes, creation, disable/enable, password reset, provisioning."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.models import AuthSession, GroupMember, Token, User
from condavault.db.base import utcnow
from condavault.errors import Conflict, InvalidName, InvalidRequest, NotFound

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")
MIN_PASSWORD = 8
# OWASP's argon2id baseline (m=19 MiB, t=2, p=1): ~0.1 s per check on a small server, where the
# library default (64 MiB, t=3, p=4) costs ~0.9 s and makes the login endpoint a DoS lever.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_dummy: list[str] = []


def _dummy_hash() -> str:
    """Verified against when the account does not exist, so both paths cost one argon2 check."""
    if not _dummy:
        _dummy.append(_hasher.hash("condavault-timing-equaliser"))
    return _dummy[0]


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"passwords need at least {MIN_PASSWORD} characters", code="weak_password")
    if len(password) > 1024:
        raise InvalidRequest("password too long", code="weak_password")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant-work check; a missing hash verifies against a dummy one and fails."""
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def check_username(name: str) -> str:
    if not USERNAME_RE.match(name or ""):
        raise InvalidName(
            f"invalid user name {name!r}: letters, digits and . _ @ + - (starting with a letter or digit)",
            code="invalid_username",
        )
    return name


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} not found", code="user_not_found", user=username)
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(
    session: Session,
    username: str,
    *,
    password: str | None = None,
    is_admin: bool = False,
    is_service: bool = False,
    email: str | None = None,
    display_name: str | None = None,
    source: str = "local",
) -> User:
    check_username(username)
    if find_user(session, username) is not None:
        raise Conflict(f"user {username!r} already exists", code="user_exists", user=username)
    if is_service and password:
        raise InvalidRequest("service accounts use tokens, not passwords", code="service_password")
    user = User(
        username=username,
        password_hash=hash_password(password) if password else None,
        is_admin=is_admin,
        is_service=is_service,
        email=email,
        display_name=display_name,
        source=source,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    if user.is_service:
        raise InvalidRequest("service accounts use tokens, not passwords", code="service_password")
    if user.source not in ("local", "system"):
        raise InvalidRequest(
            f"{user.username} signs in through {user.source}; change the password there", code="external_account"
        )
    user.password_hash = hash_password(password)
    revoke_sessions(session, user.id)


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    user.disabled = disabled
    if disabled:
        revoke_sessions(session, user.id)


def revoke_sessions(session: Session, user_id: int) -> int:
    n = 0
    for row in session.scalars(
        select(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    ):
        row.revoked_at = utcnow()
        n += 1
    return n


def delete_user(session: Session, user: User) -> None:
    if user.source == "system":
        raise InvalidRequest("the built-in admin account cannot be deleted; disable it instead", code="builtin_user")
    session.delete(user)
    session.flush()


def user_view(session: Session, user: User) -> dict[str, object]:
    from condavault.auth.models import Group

    groups = sorted(
        session.scalars(
            select(Group.name).join(GroupMember, GroupMember.group_id == Group.id).where(GroupMember.user_id == user.id)
        )
    )
    tokens = session.scalar(select(Token.id).where(Token.user_id == user.id, Token.revoked_at.is_(None)).limit(1))
    return {
        "username": user.username,
        "email": user.email,
        "display_name": user.display_name,
        "source": user.source,
        "is_admin": user.is_admin,
        "is_service": user.is_service,
        "disabled": user.disabled,
        "has_password": user.password_hash is not None,
        "has_tokens": tokens is not None,
        "groups": groups,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }
