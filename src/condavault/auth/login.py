"""Logins: local password (argon2) then LDAP/AD, OIDC provisioning, LDAP group sync, the first admin.

Provisioning rules: an external identity becomes (or updates) a user with ``source`` ldap/oidc and
its external groups become group memberships with that source; local memberships stay. An
external login never takes over an account of another source (a local ``alice`` is not ``alice``
from the directory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth import groups as group_svc
from condavault.auth import users as user_svc
from condavault.auth.backends.base import ExternalIdentity
from condavault.auth.models import User
from condavault.auth.ratelimit import LoginThrottler
from condavault.auth.services import SYSTEM_ADMIN, system_admin
from condavault.config import Settings
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.errors import Unauthenticated

log = logging.getLogger(__name__)
BAD_LOGIN = "invalid username or password"


@dataclass(frozen=True)
class LoggedIn:
    user_id: int
    username: str
    source: str


class LoginService:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.throttle = LoginThrottler(
            db,
            per_account=settings.login_max_failures,
            per_ip=settings.login_max_failures_per_ip,
            window_seconds=settings.login_window_seconds,
            block_seconds=settings.login_block_seconds,
        )
        self.ldap: Any = None
        self.oidc: Any = None
        if settings.ldap is not None:
            from condavault.auth.backends.ldap import LdapBackend

            self.ldap = LdapBackend(settings.ldap)
        if settings.oidc is not None:
            from condavault.auth.backends.oidc import OidcBackend

            self.oidc = OidcBackend(settings.oidc)

    def close(self) -> None:
        if self.oidc is not None:
            self.oidc.close()

    # -- password login -------------------------------------------------------------------------

    def password_login(self, username: str, password: str, ip: str | None) -> LoggedIn:
        """Local account first, then LDAP; throttled per account and per address."""
        if not username or not password or len(username) > 256 or len(password) > 1024:
            raise Unauthenticated(BAD_LOGIN, code="invalid_credentials")
        keys = self.throttle.keys(username, ip)
        self.throttle.check(keys)
        try:
            result = self._password_login(username, password)
        except Unauthenticated:
            self.throttle.failure(keys)
            raise
        self.throttle.success(username)
        return result

    def _password_login(self, username: str, password: str) -> LoggedIn:
        with self.db.session() as s:
            user = user_svc.find_user(s, username)
            local = user is not None and user.source in ("local", "system")
            if local or self.ldap is None or (user is not None and user.source != "ldap"):
                ok = user_svc.verify_password(user.password_hash if user is not None and local else None, password)
                if not ok or user is None or user.disabled or user.is_service:
                    raise Unauthenticated(BAD_LOGIN, code="invalid_credentials")
                rehash = user_svc.needs_rehash(user.password_hash or "")
                uid, name = user.id, user.username
        if local:
            with self.db.write_session() as s:
                u = s.get(User, uid)
                assert u is not None
                u.last_login_at = utcnow()
                if rehash:
                    u.password_hash = user_svc.hash_password(password)
            return LoggedIn(uid, name, "local")
        ext = self.ldap.authenticate(username, password)  # raises Unauthenticated on a bad password
        return self.provision(ext)

    # -- external identities --------------------------------------------------------------------

    def provision(self, ext: ExternalIdentity) -> LoggedIn:
        def work(s: Session) -> LoggedIn:
            user = user_svc.find_user(s, ext.username)
            if user is None:
                user = user_svc.create_user(
                    s, ext.username, email=ext.email, display_name=ext.display_name, source=ext.source
                )
            elif user.source != ext.source:
                log.warning(
                    "external login refused: account exists with another source",
                    extra={"user": ext.username, "source": user.source, "login_source": ext.source},
                )
                raise Unauthenticated(BAD_LOGIN, code="invalid_credentials")
            if user.disabled:
                raise Unauthenticated(BAD_LOGIN, code="invalid_credentials")
            user.email = ext.email or user.email
            user.display_name = ext.display_name or user.display_name
            user.external_id = ext.subject[:500]
            user.last_login_at = utcnow()
            group_svc.sync_external(s, user, ext.groups, ext.source)
            return LoggedIn(user.id, user.username, ext.source)

        return self.db.run_write(work)

    def sync_ldap(self) -> dict[str, int]:
        """Refresh the LDAP memberships of every known LDAP user (the scheduled job)."""
        if self.ldap is None:
            return {}
        directory = self.ldap.list_users_groups()

        def work(s: Session) -> dict[str, int]:
            changed = 0
            users = list(s.scalars(select(User).where(User.source == "ldap")))
            for user in users:
                groups = directory.get(user.username, frozenset())
                diff = group_svc.sync_external(s, user, groups, "ldap")
                changed += len(diff["added"]) + len(diff["removed"])
            return {"users": len(users), "changes": changed}

        return self.db.run_write(work)


def apply_admin_password(db: Database, password: str | None) -> bool:
    """``CONDAVAULT_ADMIN_PASSWORD``: (re)set the password of ``admin`` at start, and make it an enabled
    administrator again if it is not."""
    if not password:
        return False

    def work(s: Session) -> bool:
        admin = system_admin(s)
        usable = admin.is_admin and not admin.disabled
        if usable and admin.password_hash and user_svc.verify_password(admin.password_hash, password):
            return False
        admin.password_hash = user_svc.hash_password(password)
        admin.disabled = False
        admin.is_admin = True  # the operator setting it wants an administrator back
        return True

    changed = db.run_write(work)
    if changed:
        log.info("admin password set from the environment", extra={"user": SYSTEM_ADMIN})
    return changed
