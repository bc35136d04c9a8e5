"""Wire the vulns domain into a Context (called by ``condavault.wiring``): its runtime, its job kinds
(source syncs, the scheduled refresh, the air-gap folder import, the sweep), CVE matching of newly
ingested packages (a durable after-commit event) and its schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from condavault.channels.events import PackagesIngested
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec
from condavault.vulns import store
from condavault.vulns.models import VulnAdvisoryName
from condavault.vulns.tasks import SYNC_KIND, SYNC_LOCK, VulnRuntime

if TYPE_CHECKING:
    from condavault.context import Context


def wire(ctx: Context) -> VulnRuntime:
    rt = VulnRuntime(ctx)

    def refresh(_run: JobRun) -> dict[str, Any] | None:
        rt.refresh()
        return None

    def import_dropdir(_run: JobRun) -> dict[str, Any] | None:
        rt.import_dropdir()
        return None

    def sweep(_run: JobRun) -> dict[str, Any] | None:
        n = rt.sweep()
        return {"records": n} if n else None

    def match_ingested(_ctx: Context, event: PackagesIngested) -> dict[str, Any] | None:
        # one query for the whole batch: which of its names any advisory maps to (most: none)
        names = sorted({f.filename.rsplit("-", 2)[0] for f in event.files})
        with ctx.db.session() as s:
            known = {
                n
                for part in store.chunks(names)
                for n in s.scalars(select(VulnAdvisoryName.name).where(VulnAdvisoryName.name.in_(part)).distinct())
            }
        for f in event.files:  # IngestedFile has what the ingest listener reads of a result
            if f.security or f.filename.rsplit("-", 2)[0] in known:
                rt.on_ingested(f, None)
        return None

    ctx.kinds.register(JobKind(SYNC_KIND, rt.run_sync_job, max_attempts=1, description="CVE source sync"))
    ctx.kinds.register(JobKind("vulns.refresh", refresh, max_attempts=1, description="scheduled CVE refresh"))
    ctx.kinds.register(JobKind("vulns.import", import_dropdir, max_attempts=1, description="air-gap CVE import"))
    ctx.kinds.register(JobKind("vulns.sweep", sweep, lane="short", quiet=True, description="match unmatched records"))
    ctx.kinds.register(ctx.events.durable(PackagesIngested, "vulns.match_ingested", match_ingested))
    return rt


def schedules(ctx: Context) -> list[ScheduleSpec]:
    s = ctx.settings
    out = [ScheduleSpec("vulns.sweep", "vulns.sweep", every=s.vulns_sweep_seconds)]
    if s.vulns_sources:
        out.append(ScheduleSpec("vulns.refresh", "vulns.refresh", cron=s.vulns_refresh_cron, lock_key=SYNC_LOCK))
    if s.vulns_import_dir is not None:
        out.append(ScheduleSpec("vulns.import", "vulns.import", cron=s.vulns_import_cron, lock_key=SYNC_LOCK))
    return out
