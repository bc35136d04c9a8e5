"""Web sessions: a signed, HttpOnly cookie naming a server-side session row, plus CSRF protection.

The cookie (``condavault_session``) holds an ``itsdangerous``-signed random session id; the
database stores only its sha256, so logging out, disabling the user or an admin reset ends the
session on the next request. State-changing requests authenticated by the cookie must send the
session's CSRF token in ``X-CSRF-Token`` (the token is returned by the login call and readable
from the ``condavault_csrf`` cookie: double submit, compared against the server-side value).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.models import AuthSession
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.errors import PermissionDenied

SESSION_COOKIE = "condavault_session"
CSRF_COOKIE = "condavault_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def load_secret(configured: str | None, data_dir: Path, db: Database | None = None) -> str:
    """``session_secret`` from settings, else the one every process of the server shares through the
    database (``db``; created once, from the data dir's file when an older version made one), else a
    random one generated once into the data dir (0600)."""
    if configured:
        return configured
    if db is not None:
        from condavault.db.secrets import shared_secret

        path = data_dir / "session-secret"
        shared = shared_secret(
            db, "session-secret", lambda: path.read_text().strip() if path.is_file() else secrets.token_urlsafe(48)
        )
        if shared is not None:
            return shared
    path = data_dir / "session-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class SessionManager:
    def __init__(self, db: Database, secret: str, *, max_age: int) -> None:
        self.db = db
        self.max_age = max_age
        self._signer = URLSafeTimedSerializer(secret, salt="condavault-session")
        self.oidc_signer = URLSafeTimedSerializer(secret, salt="condavault-oidc")

    def create(self, user_id: int, *, ip: str | None, user_agent: str | None) -> tuple[str, str]:
        """Start a session; returns ``(cookie value, csrf token)``."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.db.write_session() as s:
            s.add(
                AuthSession(
                    sid_hash=_digest(sid),
                    user_id=user_id,
                    csrf_token=csrf,
                    expires_at=utcnow() + timedelta(seconds=self.max_age),
                    ip=ip,
                    user_agent=(user_agent or "")[:500],
                )
            )
        return self._signer.dumps(sid), csrf

    def sid_hash(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            sid = self._signer.loads(cookie, max_age=self.max_age)
        except BadSignature:
            return None
        return _digest(sid) if isinstance(sid, str) else None

    def end(self, cookie: str | None) -> None:
        digest = self.sid_hash(cookie)
        if digest is None:
            return
        with self.db.write_session() as s:
            row = s.scalar(select(AuthSession).where(AuthSession.sid_hash == digest))
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()

    def purge(self) -> None:
        with self.db.write_session() as s:
            cutoff = utcnow() - timedelta(days=1)
            for row in s.scalars(select(AuthSession).where(AuthSession.expires_at < cutoff)):
                s.delete(row)


def make_session_identity(manager: SessionManager) -> Any:
    """The ``app.state.session_identity`` hook used by ``auth.deps.identify``."""

    def session_identity(conn: Any) -> Identity | None:
        digest = manager.sid_hash(conn.cookies.get(SESSION_COOKIE))
        if digest is None:
            return None
        hit = conn.app.state.ctx.auth.identify_session(digest)
        if hit is None:
            return None
        identity, csrf = hit
        method = conn.scope.get("method")
        if method is not None and method not in SAFE_METHODS:
            sent = conn.headers.get(CSRF_HEADER) or ""
            if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
                raise PermissionDenied(
                    "cookie-authenticated changes need the session's CSRF token in X-CSRF-Token",
                    code="csrf_failed",
                )
        return identity

    return session_identity


def cookie_kwargs(secure: bool, max_age: int | None, *, http_only: bool = True) -> dict[str, Any]:
    return {"max_age": max_age, "httponly": http_only, "secure": secure, "samesite": "lax", "path": "/"}
