"""Mirror logic that needs the database: CRUD, the run lease, run history and the stored plan.

Functions take a ``Session`` (or a ``Database`` for the lease, which must commit on its own) and raise
:mod:`condavault.errors` types. Nothing here talks to the network; see ``sync.py`` for runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from condavault.channels.models import Channel
from condavault.channels.services import get_channel
from condavault.db.base import affected, utcnow
from condavault.db.session import Database
from condavault.errors import Busy, Conflict, InvalidRequest, NotFound
from condavault.jobs.holders import holder_is_dead as _holder_dead
from condavault.jobs.holders import new_holder  # noqa: F401  (re-exported: the lease API takes holders)
from condavault.mirror.config import MirrorConfig, MirrorConfigError
from condavault.mirror.models import Mirror, MirrorItem, MirrorRun

LEASE_SECONDS = 60.0
ACTIVE = ("pending", "planning", "running")
SECRET_FIELDS = ("upstream_token", "upstream_password")


def config_hash(cfg: MirrorConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()


def load_config(mirror: Mirror) -> MirrorConfig:
    return MirrorConfig.model_validate_json(mirror.config)


def redacted(cfg: MirrorConfig) -> dict[str, Any]:
    from condavault.mirror.upstream import redact_url

    data = cfg.model_dump(mode="json")
    for key in SECRET_FIELDS:
        if data.get(key):
            data[key] = "***"
    data["upstream"] = redact_url(data["upstream"])
    return data


# -- CRUD --------------------------------------------------------------------------------------------
def mirror_not_found(name: str) -> NotFound:
    return NotFound(f"mirror {name!r} not found", code="mirror_not_found", mirror=name)


def get_mirror(session: Session, name: str) -> Mirror:
    mirror = session.scalar(select(Mirror).where(Mirror.name == name))
    if mirror is None:
        raise mirror_not_found(name)
    return mirror


def find_mirror(session: Session, name: str) -> Mirror | None:
    return session.scalar(select(Mirror).where(Mirror.name == name))


def list_mirrors(session: Session) -> list[Mirror]:
    return list(session.scalars(select(Mirror).order_by(Mirror.name)))


def channel_name(session: Session, mirror: Mirror) -> str:
    return session.get(Channel, mirror.channel_id).name  # type: ignore[union-attr]


def save_mirror(
    session: Session, cfg: MirrorConfig, *, created_by: str | None, replace: bool
) -> tuple[Mirror, MirrorConfig | None]:
    """Create the mirror, or (``replace``) update it in place. Returns the mirror and its old config."""
    channel = get_channel(session, cfg.channel)
    mirror = find_mirror(session, cfg.name)
    before = None
    if mirror is not None and not replace:
        raise Conflict(f"mirror {cfg.name!r} already exists", code="mirror_exists", mirror=cfg.name)
    if mirror is None:
        mirror = Mirror(name=cfg.name, created_by=created_by, lease_until=0.0)
        session.add(mirror)
    else:
        before = load_config(mirror)
        if before.channel != cfg.channel:
            running = session.scalar(
                select(MirrorRun.id).where(MirrorRun.mirror_id == mirror.id, MirrorRun.status.in_(ACTIVE))
            )
            if running is not None:
                raise Busy(f"mirror {cfg.name!r} is running; cancel it before changing its channel", mirror=cfg.name)
            session.execute(delete(MirrorItem).where(MirrorItem.mirror_id == mirror.id))
    mirror.channel_id = channel.id
    mirror.mode = cfg.mode
    mirror.cron = cfg.cron
    mirror.config = cfg.model_dump_json()
    mirror.config_hash = config_hash(cfg)
    mirror.updated_at = utcnow()
    session.flush()
    return mirror, before


def delete_mirror(session: Session, name: str) -> Mirror:
    mirror = get_mirror(session, name)
    if mirror.lease_holder and mirror.lease_until > time.time():
        raise Busy(f"mirror {name!r} is running; cancel it first", code="mirror_running", mirror=name)
    session.delete(mirror)
    session.flush()
    return mirror


def merge_secrets(cfg: MirrorConfig, old: MirrorConfig | None) -> MirrorConfig:
    """A config exported with redacted secrets (``***``) keeps the stored ones when applied again."""
    if old is None:
        for key in SECRET_FIELDS:
            if getattr(cfg, key) == "***":
                raise MirrorConfigError(f"{key} is redacted ('***'); give the real value", keys=[key])
        return cfg
    changes = {k: getattr(old, k) for k in SECRET_FIELDS if getattr(cfg, k) == "***"}
    if "/t/***/" in cfg.upstream and "/t/" in old.upstream:
        changes["upstream"] = old.upstream
    return cfg.model_copy(update=changes) if changes else cfg


# -- the lease ---------------------------------------------------------------------------------------
def check_idle(session: Session, mirror: Mirror, *, busy_job: int | None = None) -> None:
    """Raise :class:`Busy` (409) when the mirror runs (a live lease) or has a run queued (``busy_job``)."""
    if mirror.lease_holder and mirror.lease_until > time.time() and not _holder_dead(mirror.lease_holder):
        raise Busy(f"mirror {mirror.name!r} is already running", code="mirror_running", mirror=mirror.name)
    if busy_job is not None:
        raise Busy(
            f"mirror {mirror.name!r} is already running (job {busy_job})",
            code="mirror_running",
            mirror=mirror.name,
            job=busy_job,
        )


def acquire_lease(db: Database, mirror_id: int, holder: str, lease_seconds: float = LEASE_SECONDS) -> None:
    """Take the mirror's run lease or raise :class:`Busy` (409). Works across processes and hosts:
    the lease is a row update; an expired lease, or one held by a dead process on this host, is taken
    over (and that holder's unfinished runs are marked failed)."""
    now = time.time()

    def take(s: Session) -> str | None:
        row = s.execute(
            select(Mirror.lease_holder, Mirror.lease_until, Mirror.name).where(Mirror.id == mirror_id)
        ).first()
        if row is None:
            raise NotFound("mirror not found", code="mirror_not_found")
        old, until, name = row
        if old and until > now and old != holder and not _holder_dead(old):
            raise Busy(f"mirror {name!r} is already running (held by {old})", code="mirror_running", mirror=name)
        res = s.execute(
            update(Mirror)
            .where(Mirror.id == mirror_id, or_(Mirror.lease_holder.is_(None), Mirror.lease_holder == old))
            .values(lease_holder=holder, lease_until=now + lease_seconds)
        )
        if not affected(res):
            raise Busy(f"mirror {name!r} is already running", code="mirror_running", mirror=name)
        s.execute(
            update(MirrorRun)
            .where(MirrorRun.mirror_id == mirror_id, MirrorRun.status.in_(ACTIVE), MirrorRun.holder != holder)
            .values(status="failed", error="interrupted: the worker running it stopped", finished_at=utcnow())
        )
        return old

    db.run_write(take)


def renew_lease(db: Database, mirror_id: int, holder: str, lease_seconds: float = LEASE_SECONDS) -> bool:
    def renew(s: Session) -> bool:
        res = s.execute(
            update(Mirror)
            .where(Mirror.id == mirror_id, Mirror.lease_holder == holder)
            .values(lease_until=time.time() + lease_seconds)
        )
        return bool(affected(res))

    return db.run_write(renew)


def release_lease(db: Database, mirror_id: int, holder: str) -> None:
    def free(s: Session) -> None:
        s.execute(
            update(Mirror)
            .where(Mirror.id == mirror_id, Mirror.lease_holder == holder)
            .values(lease_holder=None, lease_until=0.0)
        )

    db.run_write(free)


def running_channels(db: Database) -> set[int]:
    """Channels a mirror run (of any process or host) is writing now: a live lease whose holder is alive."""
    now = time.time()
    with db.session() as s:
        rows = s.execute(
            select(Mirror.channel_id, Mirror.lease_holder).where(
                Mirror.lease_holder.is_not(None), Mirror.lease_until > now
            )
        ).all()
    return {cid for cid, holder in rows if not _holder_dead(holder)}


# -- runs --------------------------------------------------------------------------------------------
def create_run(session: Session, mirror: Mirror, *, trigger: str, dry_run: bool, holder: str | None) -> MirrorRun:
    run = MirrorRun(
        mirror_id=mirror.id,
        status="pending",
        phase="queued",
        trigger=trigger,
        dry_run=dry_run,
        holder=holder,
        cancel_requested=False,
        started_at=utcnow(),
        total_items=0,
        done_items=0,
        total_bytes=0,
        done_bytes=0,
        counts="{}",
        failures="[]",
    )
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, mirror: Mirror, limit: int = 50) -> list[MirrorRun]:
    return list(
        session.scalars(
            select(MirrorRun).where(MirrorRun.mirror_id == mirror.id).order_by(MirrorRun.id.desc()).limit(limit)
        )
    )


def get_run(session: Session, mirror: Mirror, run_id: int) -> MirrorRun:
    run = session.scalar(select(MirrorRun).where(MirrorRun.mirror_id == mirror.id, MirrorRun.id == run_id))
    if run is None:
        raise NotFound(f"run {run_id} of mirror {mirror.name!r} not found", code="run_not_found")
    return run


def last_run(session: Session, mirror: Mirror, *, real: bool = True) -> MirrorRun | None:
    q = select(MirrorRun).where(MirrorRun.mirror_id == mirror.id)
    if real:
        q = q.where(MirrorRun.dry_run.is_(False))
    return session.scalar(q.order_by(MirrorRun.id.desc()).limit(1))


def request_cancel(session: Session, mirror: Mirror) -> list[tuple[int, int | None]]:
    """Flag the mirror's unfinished runs; returns ``(run id, job id)`` of each (the caller cancels the jobs)."""
    rows = session.execute(
        select(MirrorRun.id, MirrorRun.job_id).where(MirrorRun.mirror_id == mirror.id, MirrorRun.status.in_(ACTIVE))
    ).all()
    if not rows:
        raise InvalidRequest(f"mirror {mirror.name!r} has no run in progress", code="no_run_in_progress")
    session.execute(update(MirrorRun).where(MirrorRun.id.in_([r[0] for r in rows])).values(cancel_requested=True))
    return [(r[0], r[1]) for r in rows]


def cancel_queued_run(session: Session, *, run_id: int) -> None:
    """A run whose job was cancelled before it started: it never will."""
    session.execute(
        update(MirrorRun)
        .where(MirrorRun.id == run_id, MirrorRun.status == "pending")
        .values(status="cancelled", phase="done", finished_at=utcnow())
    )


# -- the stored plan ---------------------------------------------------------------------------------
def item_dict(it: MirrorItem) -> dict[str, Any]:
    return {
        "subdir": it.subdir,
        "filename": it.filename,
        "name": it.name,
        "kept": it.kept,
        "flag": it.flag,
        "filter": it.filter,
        "rule": it.rule,
        "value": it.value,
        "state": it.state,
        "sha256": it.sha256,
        "size": it.size,
        "error": it.error,
    }


def explain(session: Session, mirror: Mirror, query: str) -> list[dict[str, Any]]:
    """The stored decision for a filename, ``subdir/filename`` or package name."""
    q = query.strip()
    cond = [MirrorItem.filename == q, MirrorItem.name == q.lower(), MirrorItem.name == q]
    if "/" in q:
        sd, fn = q.split("/", 1)
        cond.append((MirrorItem.subdir == sd) & (MirrorItem.filename == fn))
    rows = session.scalars(
        select(MirrorItem)
        .where(MirrorItem.mirror_id == mirror.id, or_(*cond))
        .order_by(MirrorItem.subdir, MirrorItem.filename)
    )
    return [item_dict(r) for r in rows]


def list_items(
    session: Session,
    mirror: Mirror,
    *,
    kept: bool | None = None,
    state: str | None = None,
    filter_: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    q = select(MirrorItem).where(MirrorItem.mirror_id == mirror.id)
    if kept is not None:
        q = q.where(MirrorItem.kept.is_(kept))
    if state:
        q = q.where(MirrorItem.state == state)
    if filter_:
        q = q.where(MirrorItem.filter == filter_)
    q = q.order_by(MirrorItem.subdir, MirrorItem.filename).limit(limit).offset(offset)
    return [item_dict(r) for r in session.scalars(q)]


def item_summary(session: Session, mirror: Mirror) -> dict[str, Any]:
    rows = session.execute(
        select(MirrorItem.kept, MirrorItem.filter, MirrorItem.state, func.count())
        .where(MirrorItem.mirror_id == mirror.id)
        .group_by(MirrorItem.kept, MirrorItem.filter, MirrorItem.state)
    ).all()
    dropped: Counter[str] = Counter()
    states: Counter[str] = Counter()
    kept = 0
    for is_kept, filt, state, n in rows:
        if is_kept:
            kept += n
            states[state] += n
        else:
            dropped[filt] += n
    return {"kept": kept, "dropped": dict(dropped), "states": dict(states), "files": kept + sum(dropped.values())}


def run_dict(run: MirrorRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "phase": run.phase,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "cancel_requested": run.cancel_requested,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "plan_seconds": run.plan_seconds,
        "apply_seconds": run.apply_seconds,
        "progress": {
            "total_items": run.total_items,
            "done_items": run.done_items,
            "total_bytes": run.total_bytes,
            "done_bytes": run.done_bytes,
        },
        "counts": json.loads(run.counts or "{}"),
        "failures": json.loads(run.failures or "[]"),
        "error": run.error,
        "job_id": run.job_id,
    }
