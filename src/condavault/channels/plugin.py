"""Wire the channels domain into a Context (called by ``condavault.wiring``): the reindex job and the
index hold of open upload batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from condavault.channels.services import REINDEX_KIND, reindex_job
from condavault.channels.uploads import open_batch_channels, purge_batches
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from condavault.context import Context


def wire(ctx: Context) -> None:
    def purge(_run: JobRun) -> dict[str, int] | None:
        n = purge_batches(ctx.db)
        return {"deleted": n} if n else None

    ctx.kinds.register(JobKind(REINDEX_KIND, reindex_job, max_attempts=2, description="rebuild a channel's index"))
    ctx.kinds.register(
        JobKind("uploads.purge", purge, lane="short", quiet=True, description="forget old upload batches")
    )
    # an open upload batch publishes its channel's index at its commit: the sweep leaves it alone meanwhile
    ctx.index_holds.append(lambda: open_batch_channels(ctx.db))


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [ScheduleSpec("uploads.purge", "uploads.purge", cron="47 3 * * *")]
