"""Wires the auth domain into the app: login service, web sessions, first-admin password, jobs."""

from __future__ import annotations

import logging
from typing import Any

from condavault.auth.login import LoginService, apply_admin_password
from condavault.auth.sessions import SessionManager, load_secret, make_session_identity

log = logging.getLogger(__name__)


def _startup(ctx: Any) -> None:
    settings = ctx.settings
    apply_admin_password(ctx.db, settings.admin_password)
    if "auth.login" in ctx.extensions:
        return
    login = LoginService(settings, ctx.db)
    sessions = SessionManager(
        ctx.db, load_secret(settings.session_secret, settings.data_dir), max_age=settings.session_max_age
    )
    ctx.extensions["auth.login"] = login
    ctx.extensions["auth.sessions"] = sessions
    ctx.extensions["auth.session_identity"] = make_session_identity(sessions)
    if settings.worker:
        if login.ldap is not None and settings.ldap_sync_minutes > 0:
            ctx.runner.every(settings.ldap_sync_minutes * 60.0, lambda: _ldap_sync(ctx), "ldap-sync")
        ctx.runner.cron("29 3 * * *", lambda: (sessions.purge(), login.throttle.purge()), "auth-purge")


def _ldap_sync(ctx: Any) -> None:
    out = ctx.extensions["auth.login"].sync_ldap()
    ctx.auth.invalidate()
    log.info("ldap group sync", extra={"ldap_sync": out})


def _session_identity(conn: Any) -> Any:
    hook = conn.app.state.ctx.extensions.get("auth.session_identity")
    return hook(conn) if hook is not None else None


def install(app: Any) -> None:
    app.state.session_identity = _session_identity
    app.state.startup.append(_startup)
