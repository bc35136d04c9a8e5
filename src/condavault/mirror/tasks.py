"""Mirror runs as durable jobs (kind ``mirror.run``), and each mirror's cron as a job schedule.

Starting a run records the run row and its job in one transaction (409 if the mirror runs already);
a worker of any process executes it (:func:`run_job`). A foreground run (the dry-run API,
``?wait=true``, ``mirror run --local``) executes its job in the calling thread. Inside the job the
mirror's own lease stays the fence against a second run (``services.acquire_lease``): it also holds the
channel's index while the run writes, and a run killed with its process is taken over at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from condavault.errors import Busy, InvalidRequest
from condavault.jobs.holders import new_holder
from condavault.jobs.registry import JobKind, JobRun, JsonDict
from condavault.jobs.schedule import ScheduleSpec
from condavault.mirror import services as svc
from condavault.mirror.models import Mirror, MirrorRun
from condavault.mirror.sync import SyncRun

if TYPE_CHECKING:
    from condavault.context import Context

__all__ = ["KIND", "cancel", "cron_specs", "job_kind", "start_run"]

log = logging.getLogger(__name__)
KIND = "mirror.run"


def lock_key(mirror_id: int) -> str:
    return f"mirror:{mirror_id}"


def schedule_name(mirror_name: str) -> str:
    return f"mirror:{mirror_name}"


def cron_spec(mirror: Mirror) -> ScheduleSpec | None:
    if not mirror.cron:
        return None
    return ScheduleSpec(
        schedule_name(mirror.name), KIND, cron=mirror.cron, params={"mirror_id": mirror.id, "trigger": "cron"}
    )


def cron_specs(ctx: Context) -> list[ScheduleSpec]:
    """The schedules of every mirror with a cron (declared at start: mirrors made before the job system)."""
    with ctx.db.session() as s:
        return [spec for m in svc.list_mirrors(s) if (spec := cron_spec(m)) is not None]


def save_schedule(ctx: Context, s: Session, mirror: Mirror, old_name: str | None = None) -> None:
    """Keep the mirror's schedule in step with its cron, in the transaction that saves the mirror."""
    if old_name is not None and old_name != mirror.name:
        ctx.schedules.drop(s, schedule_name(old_name))
    spec = cron_spec(mirror)
    if spec is None:
        ctx.schedules.drop(s, schedule_name(mirror.name))
    else:
        ctx.schedules.put(s, spec, owner="mirror")


def start_run(
    ctx: Context,
    name: str,
    *,
    trigger: str = "manual",
    dry_run: bool = False,
    full: bool = False,
    background: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    raise_invalid: bool = False,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Record a run and enqueue its job, or raise ``Busy`` (409) when the mirror runs already.

    ``background``: a job worker runs it (returns at once); otherwise it runs in this thread.
    ``raise_invalid`` (foreground only): re-raise a configuration error after recording the failed run.
    """

    def create(s: Session) -> tuple[int, int, int]:
        mirror = s.scalar(select(Mirror).where(Mirror.name == name).with_for_update())
        if mirror is None:
            svc.get_mirror(s, name)  # raises the 404
            raise AssertionError("unreachable")
        svc.check_idle(s, mirror, busy_job=ctx.jobs.active(lock_key(mirror.id), session=s))
        run = svc.create_run(s, mirror, trigger=trigger, dry_run=dry_run, holder=None)
        job_id = ctx.jobs.enqueue(
            KIND,
            {"mirror_id": mirror.id, "run_id": run.id, "full": full},
            session=s,
            lock_key=lock_key(mirror.id),
            created_by=created_by,
            channel_id=mirror.channel_id,
            claim=not background,
        )
        run.job_id = job_id
        return mirror.id, run.id, job_id

    ctx.jobs.reap()  # a run whose process died (kill -9) must not block this one until the next heartbeat
    mirror_id, run_id, job_id = ctx.db.run_write(create)
    if not background:
        ran = ctx.worker.run_claimed(job_id, local={"on_progress": on_progress})
        if raise_invalid and isinstance(ran.error, InvalidRequest):
            raise ran.error  # e.g. a CVE filter without vulnerability data: a 400, not a 200
    with ctx.db.session() as s:
        mirror = s.get(Mirror, mirror_id)
        assert mirror is not None
        return svc.run_dict(svc.get_run(s, mirror, run_id))


def cancel(ctx: Context, identity: object, name: str) -> list[int]:
    """Ask the mirror's unfinished runs to stop; a run still queued is cancelled with its job."""
    runs = ctx.db.run_write(lambda s: svc.request_cancel(s, svc.get_mirror(s, name)))
    for run_id, job_id in runs:
        if job_id is not None and ctx.jobs.cancel(job_id) == "cancelled":  # it had not started
            ctx.db.run_write(functools.partial(svc.cancel_queued_run, run_id=run_id))
    ids = [r for r, _ in runs]
    ctx.record_change(identity, "mirror:cancel", name, None, {"runs": ids})
    return ids


def run_job(run: JobRun) -> JsonDict:
    """The ``mirror.run`` handler: take the mirror's lease, execute the run, release the lease."""
    ctx = run.ctx
    mirror_id = int(run.params["mirror_id"])
    holder = new_holder()
    run_id = run.params.get("run_id")
    if run_id is None:  # a cron firing: the run row is made now

        def create(s: Session) -> int:
            mirror = s.get(Mirror, mirror_id)
            if mirror is None:
                raise InvalidRequest(f"mirror {mirror_id} no longer exists", code="mirror_not_found")
            r = svc.create_run(
                s, mirror, trigger=str(run.params.get("trigger") or "cron"), dry_run=False, holder=holder
            )
            r.job_id = run.id
            return r.id

        run_id = ctx.db.run_write(create)
    elif run.attempt > 1:  # its worker died (kill -9, a lost machine): a new run resumes the old one's work
        run_id = ctx.db.run_write(
            functools.partial(_resume, mirror_id=mirror_id, old_id=int(run_id), job_id=run.id, holder=holder)
        )
    else:
        ctx.db.run_write(lambda s: s.execute(update(MirrorRun).where(MirrorRun.id == run_id).values(holder=holder)))
    try:
        _acquire(ctx, mirror_id, holder, takeover=run.attempt > 1)
    except Busy as exc:
        _give_up(ctx, int(run_id), f"{exc.message} [{exc.code}]")
        if run.params.get("trigger") == "cron":
            log.info("mirror already running; cron run skipped", extra={"mirror_id": mirror_id})
            return {"run_id": run_id, "status": "skipped"}
        raise
    sync = SyncRun(
        ctx,
        mirror_id,
        int(run_id),
        holder,
        full=bool(run.params.get("full")),
        transport=ctx.domains.mirror_transport,
        on_progress=run.local.get("on_progress"),
        job=run,
    )
    sync.execute()  # releases the lease; the outcome is in the run row
    with ctx.db.session() as s:
        row = s.get(MirrorRun, run_id)
        status = row.status if row is not None else "gone"
    if sync.exception is not None:
        raise sync.exception
    return {"run_id": run_id, "status": status}


def _acquire(ctx: Context, mirror_id: int, holder: str, *, takeover: bool) -> None:
    """The mirror's run lease. Taking over a dead worker's run, its mirror lease (renewed more often than
    the job's) may outlive the job's by a moment on another machine: wait for it, at most one lease."""
    lease = ctx.settings.job_lease_seconds
    deadline = time.monotonic() + (lease + 5 if takeover else 0)
    while True:
        try:
            svc.acquire_lease(ctx.db, mirror_id, holder, lease)
            return
        except Busy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _resume(s: Session, *, mirror_id: int, old_id: int, job_id: int, holder: str) -> int:
    """The run ``old_id`` was interrupted with its worker: close it and open the run that takes over. The
    new run plans again and skips every file already in the channel with its sha256 (verified before it
    was ingested), so nothing verified is downloaded twice."""
    from condavault.db.base import utcnow

    mirror = s.get(Mirror, mirror_id)
    old = s.get(MirrorRun, old_id)
    if mirror is None or old is None:
        raise InvalidRequest(f"mirror {mirror_id} no longer exists", code="mirror_not_found")
    new = svc.create_run(s, mirror, trigger=old.trigger, dry_run=old.dry_run, holder=holder)
    new.job_id = job_id
    if old.status in ("pending", "running"):
        old.status, old.finished_at = "failed", utcnow()
        old.error = f"interrupted: the worker running it stopped; resumed by run {new.id}"
    return new.id


def _give_up(ctx: Context, run_id: int, error: str) -> None:
    from condavault.db.base import utcnow

    ctx.db.run_write(
        lambda s: s.execute(
            update(MirrorRun)
            .where(MirrorRun.id == run_id, MirrorRun.status == "pending")
            .values(status="failed", phase="done", error=error, finished_at=utcnow())
        )
    )


def job_kind() -> JobKind:
    return JobKind(
        KIND, run_job, lane="long", max_attempts=1, takeovers=3, description="a mirror run (plan, download, index)"
    )
