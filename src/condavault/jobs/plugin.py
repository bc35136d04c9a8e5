"""The job system's own kinds and schedules: purging finished jobs, expiring superseded index shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from condavault.context import Context


def wire(ctx: Context) -> None:
    def purge(_run: JobRun) -> dict[str, Any] | None:
        n = ctx.jobs.purge(ctx.settings.jobs_retention_days)
        return {"deleted": n} if n else None

    def expire_shards(_run: JobRun) -> dict[str, Any] | None:
        n = ctx.indexer.expire_old_shards()
        return {"expired": n} if n else None

    ctx.kinds.register(JobKind("jobs.purge", purge, lane="short", quiet=True, description="purge finished jobs"))
    ctx.kinds.register(JobKind("index.expire_shards", expire_shards, lane="short", quiet=True,
                               description="forget shards superseded past the retention"))


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [
        ScheduleSpec("jobs.purge", "jobs.purge", cron="41 3 * * *"),
        ScheduleSpec("index.expire_shards", "index.expire_shards", every=3600.0),
    ]
