"""Wire the audit domain into a Context (called by ``condavault.wiring``): downloads through the
background recorder, administrative changes written in the transaction of the change, the daily purge."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from condavault.audit import services as svc
from condavault.audit.recorder import AuditRecorder
from condavault.events import AdminChange
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)


def wire(ctx: Context) -> AuditRecorder:
    rec = AuditRecorder(ctx.db, max_queued=ctx.settings.audit_queue_max)
    rec.enabled = ctx.settings.audit_downloads
    ctx.download_listeners.append(rec.on_download)
    ctx.events.on_transaction(AdminChange, rec.write_change)

    def purge(_run: JobRun) -> dict[str, Any]:
        out = ctx.db.run_write(lambda s: svc.purge(s, ctx.settings.audit_retention_days))
        log.info("audit purge", extra={"purged": out})
        return out

    ctx.kinds.register(JobKind("audit.purge", purge, lane="short", description="purge audit rows past retention"))
    return rec


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [ScheduleSpec("audit.purge", "audit.purge", cron="17 3 * * *")]
