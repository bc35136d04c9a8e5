"""Wire the mirror domain into a Context (called by ``condavault.wiring``): the passive fetcher, the
index hold of running mirrors, the ``mirror.run`` job kind and each mirror's cron schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from condavault.jobs.schedule import ScheduleSpec
from condavault.mirror import fanout, tasks
from condavault.mirror import services as svc
from condavault.mirror.passive import PassiveFetcher

if TYPE_CHECKING:
    from condavault.context import Context

__all__ = ["MirrorDomain", "schedules", "wire"]


@dataclass
class MirrorDomain:
    fetcher: PassiveFetcher


def wire(ctx: Context) -> MirrorDomain:
    domain = MirrorDomain(fetcher=PassiveFetcher(ctx))
    ctx.missing_fetchers.append(domain.fetcher)
    # a mirror run publishes its channel's index itself: the sweep must not index it meanwhile, whichever
    # process runs it (a worker, ``mirror run --local``)
    ctx.index_holds.append(lambda: svc.running_channels(ctx.db))
    ctx.kinds.register(tasks.job_kind())
    ctx.kinds.register(fanout.job_kind())
    return domain


def schedules(ctx: Context) -> list[ScheduleSpec]:
    """Every mirror's cron (owner ``mirror``; saving a mirror keeps its schedule in step)."""
    return tasks.cron_specs(ctx)
