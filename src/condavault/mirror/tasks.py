"""Mirror jobs: start a run (in the background or here), and the cron schedule of every mirror."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from condavault.errors import Busy, InvalidRequest
from condavault.mirror import services as svc
from condavault.mirror.models import Mirror
from condavault.mirror.sync import SyncRun

__all__ = ["Scheduler", "start_run"]

log = logging.getLogger(__name__)


def start_run(
    ctx: Any,
    name: str,
    *,
    trigger: str = "manual",
    dry_run: bool = False,
    full: bool = False,
    background: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    raise_invalid: bool = False,
) -> dict[str, Any]:
    """Take the mirror's lease (or raise ``Busy``), record a run, and execute it.

    ``raise_invalid`` (foreground only): re-raise a configuration error after recording the failed run.
    ``background``: on a thread of its own (returns at once; a long run must not hold one of the job
    runner's threads, which the indexer needs to publish the run's result); otherwise in this thread.
    """
    holder = svc.new_holder()
    with ctx.db.session() as s:
        mirror_id = svc.get_mirror(s, name).id
    svc.acquire_lease(ctx.db, mirror_id, holder)
    try:

        def create(s: Any) -> int:
            mirror = s.get(Mirror, mirror_id)
            return svc.create_run(s, mirror, trigger=trigger, dry_run=dry_run, holder=holder).id

        run_id = ctx.db.run_write(create)
    except BaseException:
        svc.release_lease(ctx.db, mirror_id, holder)
        raise
    job = SyncRun(
        ctx,
        mirror_id,
        run_id,
        holder,
        full=full,
        transport=ctx.extensions.get("mirror.transport"),
        on_progress=on_progress,
    )
    if background:
        threading.Thread(target=job.execute, name=f"condavault-mirror-{name}", daemon=True).start()
    else:
        job.execute()
        if raise_invalid and isinstance(job.exception, InvalidRequest):
            raise job.exception  # e.g. a CVE filter without the vulns provider: a 400, not a 200
    with ctx.db.session() as s:
        mirror = s.get(Mirror, mirror_id)
        return svc.run_dict(svc.get_run(s, mirror, run_id))


class Scheduler:
    """Keeps one cron registration per mirror with a ``cron``; ``sync()`` re-reads the mirrors.

    ``JobRunner.cron`` threads cannot be withdrawn, so each registration remembers the expression it was
    made for and does nothing once the mirror's cron changed or the mirror is gone.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.current: dict[str, str] = {}
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self.ctx.db.session() as s:
            wanted = {m.name: m.cron for m in svc.list_mirrors(s) if m.cron}
        with self._lock:
            for name in [n for n in self.current if n not in wanted]:
                del self.current[name]
            for name, expr in wanted.items():
                if self.current.get(name) == expr:
                    continue
                self.current[name] = expr
                self.ctx.runner.cron(expr, self._fire(name, expr), f"mirror-{name}")

    def _fire(self, name: str, expr: str) -> Callable[[], None]:
        def fire() -> None:
            if self.current.get(name) != expr:
                return  # superseded registration
            try:
                start_run(self.ctx, name, trigger="cron")
            except Busy:
                log.info("mirror already running; cron run skipped", extra={"mirror": name})

        return fire
