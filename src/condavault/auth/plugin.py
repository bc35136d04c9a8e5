"""Wire the auth domain into a Context (called by ``condavault.wiring``): the login service, web
sessions, the owner grant of a new channel, and the jobs (LDAP group sync, purges of expired sessions
and login throttles)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from condavault.auth.identity import Identity
from condavault.auth.login import LoginService
from condavault.auth.models import Grant, Role
from condavault.auth.sessions import SessionManager, load_secret, make_session_identity
from condavault.channels.events import ChannelCreated
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from condavault.context import Context

log = logging.getLogger(__name__)


@dataclass
class AuthDomain:
    login: LoginService
    sessions: SessionManager
    session_identity: Callable[[HTTPConnection], Identity | None]


def wire(ctx: Context) -> AuthDomain:
    settings = ctx.settings
    login = LoginService(settings, ctx.db)
    sessions = SessionManager(
        ctx.db, load_secret(settings.session_secret, settings.data_dir, ctx.db), max_age=settings.session_max_age
    )
    domain = AuthDomain(login, sessions, make_session_identity(sessions))

    def ldap_sync(_run: JobRun) -> dict[str, Any]:
        out = login.sync_ldap()
        ctx.auth.invalidate()
        log.info("ldap group sync", extra={"ldap_sync": out})
        return out

    def purge(_run: JobRun) -> dict[str, Any] | None:
        sessions.purge()
        login.throttle.purge()
        return None

    ctx.kinds.register(
        JobKind("auth.ldap_sync", ldap_sync, lane="short", max_attempts=1, description="LDAP group sync")
    )
    ctx.kinds.register(JobKind("auth.purge", purge, lane="short", description="purge expired sessions/throttles"))
    ctx.events.on_transaction(ChannelCreated, owner_grant)
    ctx.events.on_commit(ChannelCreated, lambda _e: ctx.auth.invalidate())
    return domain


def owner_grant(session: Session, event: ChannelCreated) -> None:
    """The creator of a channel owns it (unless it is a global admin, who needs no grant)."""
    actor = event.actor
    if actor.user_id is None or actor.is_admin:
        return
    role_id = session.scalar(select(Role.id).where(Role.name == "owner"))
    session.add(Grant(role_id=role_id, user_id=actor.user_id, channel_id=event.channel_id))
    session.flush()


def schedules(ctx: Context) -> list[ScheduleSpec]:
    s = ctx.settings
    out = [ScheduleSpec("auth.purge", "auth.purge", cron="29 3 * * *")]
    if s.ldap is not None and s.ldap_sync_minutes > 0:
        out.append(ScheduleSpec("auth.ldap_sync", "auth.ldap_sync", every=s.ldap_sync_minutes * 60.0))
    return out
