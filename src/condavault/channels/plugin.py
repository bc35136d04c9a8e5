"""Wire the channels domain into a Context (called by ``condavault.wiring``): the reindex job and the
index hold of open upload batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from condavault.channels.services import REINDEX_KIND, reindex_job
from condavault.channels.uploads import open_batch_channels
from condavault.jobs.registry import JobKind

if TYPE_CHECKING:
    from condavault.context import Context


def wire(ctx: Context) -> None:
    ctx.kinds.register(JobKind(REINDEX_KIND, reindex_job, max_attempts=2, description="rebuild a channel's index"))
    # an open upload batch publishes its channel's index at its commit: the sweep leaves it alone meanwhile
    ctx.index_holds.append(lambda: open_batch_channels(ctx.db))
