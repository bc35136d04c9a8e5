"""Identities from credentials, token issue/revoke, and first-start bootstrap."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from condavault.auth import tokens
from condavault.auth.identity import ANONYMOUS, Identity
from condavault.auth.models import Grant, Group, GroupMember, Role, Token, User
from condavault.auth.permissions import BUILTIN_ROLES, Permission
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.errors import NotFound, Unauthenticated

log = logging.getLogger(__name__)
CACHE_TTL = 0.5  # also the bound across processes on SQLite (PostgreSQL: condavault.db.notify)
SYSTEM_ADMIN = "admin"


def ensure_builtin_roles(session: Session) -> None:
    existing = {r.name: r for r in session.scalars(select(Role))}
    for name, (perms, desc) in BUILTIN_ROLES.items():
        values = json.dumps(sorted(p.value for p in perms))
        if name not in existing:
            session.add(Role(name=name, permissions=values, builtin=True, description=desc))
        elif existing[name].builtin and existing[name].permissions != values:
            existing[name].permissions = values
    session.flush()


_KNOWN = frozenset(p.value for p in Permission)  # ``str in Permission`` raises TypeError on Python 3.11


def load_grants(session: Session, user_id: int, group_ids: frozenset[int]) -> dict[int | None, frozenset[Permission]]:
    cond = Grant.user_id == user_id
    if group_ids:
        cond = or_(cond, Grant.group_id.in_(group_ids))
    out: dict[int | None, set[Permission]] = {}
    for channel_id, perms in session.execute(
        select(Grant.channel_id, Role.permissions).join(Role, Role.id == Grant.role_id).where(cond)
    ):
        out.setdefault(channel_id, set()).update(Permission(p) for p in json.loads(perms) if p in _KNOWN)
    return {k: frozenset(v) for k, v in out.items()}


def identity_for_user(session: Session, user: User, *, token: Token | None = None) -> Identity:
    group_ids = frozenset(session.scalars(select(GroupMember.group_id).where(GroupMember.user_id == user.id)))
    return Identity(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        group_ids=group_ids,
        token_id=token.id if token else None,
        scopes=tokens.parse_scopes(json.loads(token.scopes)) if token else None,
        grants=load_grants(session, user.id, group_ids),
    )


class AuthService:
    """Resolves credentials to identities, with a short in-process cache on the serving path.

    Any change to users, groups, grants or tokens made through this process calls ``invalidate`` so
    the next request sees it; other processes at once on PostgreSQL (``condavault.db.notify``), else within
    ``CACHE_TTL`` seconds.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def identify_token(self, token: str) -> Identity:
        """Identity for a token; raises 401 for unknown, revoked or expired tokens and disabled users."""
        if not token or len(token) > 200:
            raise Unauthenticated("invalid, expired or revoked token", code="invalid_token")
        ident = self._cached("t:" + tokens.hash_token(token), self._load)
        if ident is None:
            raise Unauthenticated("invalid, expired or revoked token", code="invalid_token")
        return ident

    def peek_token(self, token: str) -> tuple[bool, Identity | None]:
        """``(True, identity or None)`` when the token's answer is cached: no database (the event loop
        may call this; on a miss, call :meth:`identify_token` on a worker thread)."""
        if not token or len(token) > 200:
            return True, None
        hit = self._cache.get("t:" + tokens.hash_token(token))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def identify_session(self, sid_hash: str) -> tuple[Identity, str] | None:
        """Identity and CSRF token of a live web session, or None (expired, logged out, user disabled)."""
        hit = self._cached("s:" + sid_hash, self._load_session)
        return hit  # type: ignore[return-value]

    def _cached(self, key: str, load: Callable[[str], tuple[object, float | None] | None]) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        loaded = load(key[2:])
        value, valid_for = loaded if loaded is not None else (None, None)
        ttl = CACHE_TTL if valid_for is None else max(0.0, min(CACHE_TTL, valid_for))
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + ttl, value)  # type: ignore[assignment]
        return value

    def _load(self, digest: str) -> tuple[Identity, float | None] | None:
        with self.db.session() as s:
            tok = s.scalar(select(Token).where(Token.token_hash == digest))
            if tok is None or tok.revoked_at is not None:
                return None
            now = utcnow()
            if tok.expires_at is not None and tok.expires_at <= now:
                return None
            user = s.get(User, tok.user_id)
            if user is None or user.disabled:
                return None
            left = (tok.expires_at - now).total_seconds() if tok.expires_at is not None else None
            return identity_for_user(s, user, token=tok), left

    def _load_session(self, sid_hash: str) -> tuple[tuple[Identity, str], float] | None:
        from condavault.auth.models import AuthSession

        with self.db.session() as s:
            row = s.scalar(select(AuthSession).where(AuthSession.sid_hash == sid_hash))
            now = utcnow()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            return (identity_for_user(s, user), row.csrf_token), (row.expires_at - now).total_seconds()

    def token_expiry(self, token: str) -> datetime | None:
        with self.db.session() as s:
            tok = s.scalar(select(Token).where(Token.token_hash == tokens.hash_token(token)))
            return tok.expires_at if tok else None


def issue_token(
    session: Session,
    user: User,
    scopes: list[dict[str, object]],
    *,
    name: str = "",
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> tuple[str, Token]:
    parsed = tokens.parse_scopes(scopes)  # validates
    if expires_at is not None and expires_at.tzinfo is None:
        from datetime import UTC

        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at is not None and expires_at <= utcnow():
        from condavault.errors import InvalidRequest

        raise InvalidRequest("the expiry date is in the past", code="invalid_expiry")
    token, prefix, digest = tokens.generate()
    row = Token(
        prefix=prefix,
        token_hash=digest,
        user_id=user.id,
        name=name,
        scopes=json.dumps([s.to_dict() for s in parsed]),
        expires_at=expires_at,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return token, row


def find_token(session: Session, token_or_id: str) -> Token:
    row = None
    if token_or_id.isdigit():
        row = session.get(Token, int(token_or_id))
        if row is None:
            row = session.scalar(select(Token).where(Token.prefix == token_or_id))
    elif token_or_id.startswith("cv-"):
        row = session.scalar(select(Token).where(Token.token_hash == tokens.hash_token(token_or_id)))
        if row is None:
            parts = token_or_id.split("-")
            if len(parts) >= 2:
                row = session.scalar(select(Token).where(Token.prefix == parts[1]))
    else:
        row = session.scalar(select(Token).where(Token.prefix == token_or_id))
    if row is None:
        raise NotFound("token not found", code="token_not_found")
    return row


def system_admin(session: Session) -> User:
    user = session.scalar(select(User).where(User.username == SYSTEM_ADMIN))
    if user is None:
        user = User(username=SYSTEM_ADMIN, source="system", is_admin=True, display_name="Administrator")
        session.add(user)
        session.flush()
    return user


def bootstrap(db: Database, token_path: Path) -> str | None:
    """First start: built-in roles, the ``admin`` account and its token (printed once, stored 0600).

    Returns the new token when one was created, else None.
    """
    with db.write_session() as s:
        ensure_builtin_roles(s)
        admin = system_admin(s)
        has_token = s.scalar(select(Token.id).where(Token.user_id == admin.id, Token.name == "bootstrap")) is not None
        if has_token and token_path.exists():
            return None
        token, _row = issue_token(
            s, admin, [{"scope": "api"}], name="bootstrap" if not has_token else "bootstrap-2", created_by="condavault"
        )
    token_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(token_path, 0o600)
    return token


def ensure_group(session: Session, name: str, source: str = "local") -> Group:
    g = session.scalar(select(Group).where(Group.name == name))
    if g is None:
        g = Group(name=name, source=source)
        session.add(g)
        session.flush()
    return g


ANON = ANONYMOUS
