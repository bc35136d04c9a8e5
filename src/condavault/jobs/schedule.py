"""Scheduled jobs: fired once across every process.

A schedule row holds its next due time. Every worker process looks at the due rows about once a
second; to fire one, a process moves ``next_at`` forward with a compare-and-set on the value it read
(``UPDATE ... WHERE name = :n AND next_at = :seen``) and, in the same transaction, enqueues the job.
Only one process can win that update, so a schedule fires once however many workers run. A schedule's
job carries ``dedupe_key`` and ``lock_key`` ``schedule:<name>``: a firing while the last job still waits
adds nothing, and two jobs of one schedule never run at once.

After downtime a schedule fires once (not once per missed period), then resumes its rhythm.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from condavault.db.base import affected, utcnow
from condavault.db.session import Database
from condavault.errors import InvalidRequest
from condavault.jobs.models import JobSchedule
from condavault.jobs.queue import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    kind: str
    cron: str | None = None
    every: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    lock_key: str | None = None  # default ``schedule:<name>``; share one to keep kinds from overlapping

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r}: give exactly one of cron and every")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise InvalidRequest(f"schedule {self.name!r}: invalid cron expression {self.cron!r}", code="invalid_cron")
        if self.every is not None and self.every <= 0:
            raise ValueError(f"schedule {self.name!r}: every must be positive")

    def next_after(self, now: float) -> float:
        if self.every is not None:
            return now + self.every
        assert self.cron is not None
        nxt = croniter(self.cron, datetime.fromtimestamp(now, UTC)).get_next(datetime)
        return float(nxt.timestamp())


def _spec(row: JobSchedule) -> ScheduleSpec:
    return ScheduleSpec(row.name, row.kind, row.cron, row.every_seconds, json.loads(row.params or "{}"), row.lock_key)


class Schedules:
    def __init__(self, db: Database, queue: JobQueue) -> None:
        self.db = db
        self.queue = queue

    def declare(self, specs: Iterable[ScheduleSpec], owner: str = "system") -> None:
        """Make the schedules of ``owner`` exactly ``specs`` (start-up: the ones the settings ask for).
        A schedule whose timing changed is due at its new time; an unchanged one keeps its next time."""
        wanted = {s.name: s for s in specs}

        def work(s: Session) -> None:
            rows = {r.name: r for r in s.scalars(select(JobSchedule).where(JobSchedule.owner == owner))}
            for name in set(rows) - set(wanted):
                s.delete(rows[name])
            for spec in wanted.values():
                self.put(s, spec, owner=owner, row=rows.get(spec.name))

        for attempt in range(3):
            try:
                self.db.run_write(work)
                return
            except IntegrityError:  # another process starting at the same moment declared them first
                if attempt == 2:
                    raise
                log.info("schedules declared concurrently by another process; reading them again")

    def put(self, s: Session, spec: ScheduleSpec, *, owner: str, row: JobSchedule | None = None) -> None:
        """Create or update one schedule in the caller's transaction (a mirror's cron, saved with it)."""
        if row is None:
            row = s.get(JobSchedule, spec.name)
        params = json.dumps(spec.params, sort_keys=True)
        if row is None:
            s.add(
                JobSchedule(
                    name=spec.name,
                    kind=spec.kind,
                    params=params,
                    cron=spec.cron,
                    every_seconds=spec.every,
                    lock_key=spec.lock_key,
                    next_at=spec.next_after(time.time()),
                    owner=owner,
                    updated_at=utcnow(),
                )
            )
            return
        row.owner, row.lock_key = owner, spec.lock_key
        if (row.kind, row.params, row.cron, row.every_seconds) != (spec.kind, params, spec.cron, spec.every):
            row.kind, row.params, row.cron, row.every_seconds = spec.kind, params, spec.cron, spec.every
            row.next_at = spec.next_after(time.time())
            row.updated_at = utcnow()

    @staticmethod
    def drop(s: Session, name: str) -> None:
        s.execute(delete(JobSchedule).where(JobSchedule.name == name))

    def list_schedules(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "cron": r.cron,
                    "every_seconds": r.every_seconds,
                    "next_at": datetime.fromtimestamp(r.next_at, UTC),
                    "last_fired_at": datetime.fromtimestamp(r.last_fired_at, UTC) if r.last_fired_at else None,
                    "last_job_id": r.last_job_id,
                    "owner": r.owner,
                }
                for r in s.scalars(select(JobSchedule).order_by(JobSchedule.name))
            ]

    def tick(self, now: float | None = None) -> list[int]:
        """Fire every due schedule this process wins; returns the ids of the jobs it enqueued."""
        now = time.time() if now is None else now
        with self.db.session() as s:
            due = [(r.name, r.next_at) for r in s.scalars(select(JobSchedule).where(JobSchedule.next_at <= now))]
        fired = []
        for name, seen in due:

            def work(s: Session, name: str = name, seen: float = seen) -> int | None:
                row = s.get(JobSchedule, name)
                if row is None or row.next_at != seen:
                    return None
                spec = _spec(row)
                if self.queue.kinds.get(spec.kind) is None:
                    return None  # a kind this process does not run (another version): leave it to others
                res = s.execute(
                    update(JobSchedule)
                    .where(JobSchedule.name == name, JobSchedule.next_at == seen)
                    .values(next_at=spec.next_after(now), last_fired_at=now)
                )
                if not affected(res):
                    return None  # another process fired it
                key = f"schedule:{name}"
                job_id = self.queue.enqueue(
                    spec.kind, spec.params, session=s, dedupe_key=key, lock_key=spec.lock_key or key, schedule=name
                )
                s.execute(update(JobSchedule).where(JobSchedule.name == name).values(last_job_id=job_id))
                return job_id

            job_id = self.db.run_write(work)
            if job_id is not None:
                fired.append(job_id)
        return fired
