"""Every domain wired into a Context, typed and in one place (what the untyped ``extensions`` dict and the
per-domain start-up hooks used to do).

:func:`wire` (from ``Context.build``) builds each domain's runtime with its ``plugin.wire(ctx)``: that
registers the domain's job kinds, event subscribers and hooks on the Context. :func:`start` starts a
process's background work; :func:`stop` ends it. A domain that fails to import fails the start-up with
its error: nothing is skipped silently.

Core subscribers live here too: what follows a change of records or channels in this process (asking
for an index run, dropping cached lookups).
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from condavault.airgap import plugin as airgap_plugin
from condavault.audit import plugin as audit_plugin
from condavault.audit.recorder import AuditRecorder
from condavault.auth import plugin as auth_plugin
from condavault.auth.plugin import AuthDomain
from condavault.channels import plugin as channels_plugin
from condavault.channels.events import ChannelChanged, RecordsChanged
from condavault.db.notify import CacheBroadcast
from condavault.jobs import plugin as jobs_plugin
from condavault.jobs.schedule import ScheduleSpec
from condavault.mirror import plugin as mirror_plugin
from condavault.mirror.plugin import MirrorDomain
from condavault.scanning import plugin as scanning_plugin
from condavault.scanning.stage import ScanStage
from condavault.search import plugin as search_plugin
from condavault.search.plugin import SearchDomain
from condavault.vulns import plugin as vulns_plugin
from condavault.vulns.tasks import VulnRuntime

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)


@dataclass
class Domains:
    auth: AuthDomain
    audit: AuditRecorder
    mirror: MirrorDomain
    vulns: VulnRuntime
    search: SearchDomain
    scanning: ScanStage
    # tests inject an ``httpx.MockTransport`` here to fault upstreams (mirror runs, passive fetches)
    mirror_transport: httpx.AsyncBaseTransport | None = None
    started: bool = False


def wire(ctx: Context) -> Domains:
    _core_subscribers(ctx)
    jobs_plugin.wire(ctx)
    channels_plugin.wire(ctx)
    airgap_plugin.wire(ctx)
    return Domains(
        auth=auth_plugin.wire(ctx),
        audit=audit_plugin.wire(ctx),
        mirror=mirror_plugin.wire(ctx),
        vulns=vulns_plugin.wire(ctx),
        search=search_plugin.wire(ctx),
        scanning=scanning_plugin.wire(ctx),
    )


def _core_subscribers(ctx: Context) -> None:
    def records_changed(event: RecordsChanged) -> None:
        if event.index:
            for subdir in event.subdirs:
                ctx.request_index(event.channel_id, subdir)

    def channel_changed(event: ChannelChanged) -> None:
        if event.channel is not None:
            ctx.channels.invalidate(event.channel)
        ctx.lookup.invalidate(event.channel_id)
        if event.deleted:
            ctx.indexer.forget(event.channel_id)

    ctx.events.on_commit(RecordsChanged, records_changed)
    ctx.events.on_commit(ChannelChanged, channel_changed)


def broadcast(ctx: Context) -> CacheBroadcast:
    """The caches every other process must drop when this one changes what they hold (PostgreSQL
    LISTEN/NOTIFY; see condavault.db.notify)."""
    b = CacheBroadcast(ctx.db)
    b.attach("auth", ctx.auth)
    b.attach("channels", ctx.channels)
    b.attach("lookup", ctx.lookup)
    b.attach("lookup-published", ctx.lookup.publishes)
    b.attach("vulns", ctx.domains.vulns.provider)
    b.attach("blocked", ctx.domains.scanning.blocked)
    return b


def schedules(ctx: Context) -> dict[str, list[ScheduleSpec]]:
    """The schedules each owner declares at start (``system``: from the settings; ``mirror``: crons)."""
    return {
        "system": [
            *jobs_plugin.schedules(ctx),
            *channels_plugin.schedules(ctx),
            *auth_plugin.schedules(ctx),
            *audit_plugin.schedules(ctx),
            *vulns_plugin.schedules(ctx),
            *search_plugin.schedules(ctx),
            *airgap_plugin.schedules(ctx),
            *scanning_plugin.schedules(ctx),
        ],
        "mirror": mirror_plugin.schedules(ctx),
    }


def start(ctx: Context) -> None:
    """Start this process's background work (idempotent): the audit writer in every process; with
    ``settings.worker``, the schedules and the job worker."""
    d = ctx.domains
    if d.started:
        return
    d.started = True
    from condavault.auth.login import apply_admin_password

    apply_admin_password(ctx.db, ctx.settings.admin_password)
    d.vulns.startup()  # re-scores advisories when the score preference changed
    d.audit.start()
    atexit.register(d.audit.close)
    ctx.broadcast.start()
    if ctx.settings.worker:
        for owner, specs in schedules(ctx).items():
            ctx.schedules.declare(specs, owner=owner)
        ctx.worker.start()


def stop(ctx: Context) -> None:
    """Stop the job worker (running jobs are asked to stop) and drain the audit queue."""
    d: Any = getattr(ctx, "domains", None)
    ctx.worker.stop()
    b: CacheBroadcast | None = getattr(ctx, "broadcast", None)
    if b is not None:
        b.stop()
    if d is not None:
        d.audit.close()
