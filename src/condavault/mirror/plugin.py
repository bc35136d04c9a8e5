"""Wires the mirror domain into the app: the router, the passive fetcher and the cron schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from condavault.mirror import services as svc
from condavault.mirror.api import router
from condavault.mirror.passive import PassiveFetcher
from condavault.mirror.tasks import Scheduler

__all__ = ["MirrorDomain", "install", "startup"]

CRON_RESYNC_SECONDS = 60.0


@dataclass
class MirrorDomain:
    """What the mirror domain keeps on the Context (``ctx.extensions["mirror"]``)."""

    fetcher: PassiveFetcher
    scheduler: Scheduler


def startup(ctx: Any) -> MirrorDomain:
    domain = ctx.extensions.get("mirror")
    if domain is not None:
        return domain  # type: ignore[no-any-return]
    domain = MirrorDomain(fetcher=PassiveFetcher(ctx), scheduler=Scheduler(ctx))
    ctx.extensions["mirror"] = domain
    ctx.missing_fetchers.append(domain.fetcher)
    # a mirror run publishes its channel's index itself: the sweep must not index it meanwhile, whichever
    # process runs it (a worker, ``mirror run --local``)
    ctx.index_holds.append(lambda: svc.running_channels(ctx.db))
    if ctx.settings.worker:
        domain.scheduler.sync()
        ctx.runner.every(CRON_RESYNC_SECONDS, domain.scheduler.sync, "mirror-cron-sync")
    return domain


def install(app: Any) -> None:
    app.include_router(router)
    app.state.startup.append(startup)
