"""The job system's own kinds and schedules: purging finished jobs, expiring superseded index shards, and
``jobs.noop`` (does nothing but say where it ran: the queue's health check and throughput benchmark)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from condavault.indexing import garbage
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

    def collect_index(_run: JobRun) -> dict[str, Any] | None:
        deleted, waiting = garbage.collect_superseded(ctx.db, ctx.ingestor.guard, ctx.settings)
        return {"deleted": deleted, "waiting": waiting} if deleted or waiting else None

    def noop(run: JobRun) -> dict[str, Any]:
        """Waits ``sleep`` seconds (stopping early when cancelled); with ``log``, appends one line per run
        to ``<data-dir>/jobs-noop.log`` so a benchmark can count runs independently of the queue."""
        deadline = time.monotonic() + min(float(run.params.get("sleep") or 0), 3600.0)
        while (left := deadline - time.monotonic()) > 0:
            run.check_cancelled()
            time.sleep(min(left, 0.05))
        if run.params.get("log"):
            line = f"{run.id} {ctx.jobs.holder} {run.attempt}\n".encode()
            fd = os.open(ctx.settings.data_dir / "jobs-noop.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write of a short line with O_APPEND: lines of processes never mix
            finally:
                os.close(fd)
        return {"worker": ctx.jobs.holder, "attempt": run.attempt}

    ctx.kinds.register(JobKind("jobs.noop", noop, description="does nothing (health check, benchmarks)"))
    ctx.kinds.register(JobKind("jobs.purge", purge, lane="short", quiet=True, description="purge finished jobs"))
    ctx.kinds.register(
        JobKind(
            "index.expire_shards",
            expire_shards,
            lane="short",
            quiet=True,
            description="forget shards superseded past the retention",
        )
    )
    ctx.kinds.register(
        JobKind(
            "index.collect",
            collect_index,
            lane="short",
            quiet=True,
            description="delete index files superseded longer than the retention",
        )
    )


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [
        ScheduleSpec("jobs.purge", "jobs.purge", cron="41 3 * * *"),
        ScheduleSpec("index.expire_shards", "index.expire_shards", every=3600.0),
        ScheduleSpec("index.collect", "index.collect", every=garbage.collect_every(ctx.settings)),
    ]
