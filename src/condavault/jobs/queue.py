"""The durable job queue: a table in the application database (SQLite or PostgreSQL).

Why a table of our own rather than a queue library: condavault's default install is one process on
SQLite and its production install is PostgreSQL, and the job state must be readable by the API of
every process (``GET /api/jobs``). procrastinate is PostgreSQL-only; huey and RQ need Redis (or, for
huey's SQLite storage, a second database that PostgreSQL installs would not share); Celery needs a
broker. A job table is about as much code as any of their adapters would be, lives in the same
transactions as the changes that enqueue it (so a change and its follow-up work commit together), and
is backed up with everything else.

How it stays correct across processes:

* **claim** -- one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1)``; on PostgreSQL the inner select is
  ``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other), on SQLite the claim runs in a
  ``BEGIN IMMEDIATE`` transaction (writers are serialised). A job whose ``lock_key`` is held by a
  running job is skipped; a partial unique index turns the rare simultaneous claim of two such jobs into
  a constraint error for one of them, which simply claims nothing this time.
* **lease** -- a running job's ``lease_until`` is renewed by its worker's heartbeat; a job whose lease
  expired, or whose worker on this host is gone (``kill -9``), is queued again (or failed once its
  attempts are used up). Delivery is therefore at least once: handlers are written to be re-run.
* **finish** -- only the worker holding the job may finish it (``WHERE worker = me AND state =
  'running'``), so a worker that lost its lease cannot overwrite the outcome of the one that took over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from condavault.db.base import affected, table, utcnow
from condavault.db.session import Database, after_commit
from condavault.errors import Busy, Conflict, NotFound
from condavault.jobs.holders import holder_is_dead
from condavault.jobs.models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, Job
from condavault.jobs.registry import JobKinds, JsonDict

log = logging.getLogger(__name__)
LEASE_SECONDS = 60.0
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
MAX_JSON = 1_000_000  # a result or params document larger than this is refused (results: truncated)


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    params: JsonDict
    attempt: int
    max_attempts: int


def _json(value: Any, what: str) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    if len(text) > MAX_JSON:
        raise ValueError(f"job {what} too large ({len(text)} bytes)")
    return text


def job_dict(job: Job) -> JsonDict:
    """The API shape of a job row."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "params": json.loads(job.params or "{}"),
        "phase": job.phase,
        "done": job.done,
        "total": job.total,
        "result": json.loads(job.result) if job.result else None,
        "error": job.error,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "schedule": job.schedule,
        "worker": job.worker,
        "heartbeat_at": job.heartbeat_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
    }


def _insert_deduped(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a job row unless a queued job of its ``dedupe_key`` exists (then None)."""
    ins = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(Job)
    stmt = ins.values(**values).on_conflict_do_nothing(
        # literal, not a bound parameter: PostgreSQL infers the partial unique index only from a
        # predicate it can compare (SQLAlchemy 2.1 binds ``Job.state == QUEUED`` as $1)
        index_elements=["dedupe_key"],
        index_where=text(f"state = '{QUEUED}'"),
    )
    got = session.execute(stmt.returning(Job.id)).scalar()
    return None if got is None else int(got)


class JobQueue:
    """Enqueue, inspect and cancel jobs; claim, heartbeat and finish them (for :class:`JobWorker`)."""

    def __init__(self, db: Database, kinds: JobKinds, holder: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.db = db
        self.kinds = kinds
        self.holder = holder
        self.lease_seconds = lease_seconds  # job_lease_seconds: how long another host waits for a silent worker
        self._wake = threading.Event()  # set when this process enqueued something: workers look at once

    # -- enqueue ---------------------------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        params: JsonDict | None = None,
        *,
        session: Session | None = None,
        dedupe_key: str | None = None,
        lock_key: str | None = None,
        created_by: str | None = None,
        channel_id: int | None = None,
        delay: float = 0.0,
        schedule: str | None = None,
        claim: bool = False,
        wake: bool = True,
    ) -> int:
        """Add a job; returns its id. With ``session`` the job is part of that transaction (it exists if
        and only if the caller's change commits). With ``dedupe_key``, a job of that key already queued
        is returned instead of adding another. ``claim``: the job starts out running, claimed by this
        process, which runs it at once (``JobWorker.run_claimed``; no worker can take it first). ``wake``
        False: this process's workers are not woken for it (its caller runs it at once with ``run_here``);
        they still find it at their next poll."""
        if session is None:
            return self.db.run_write(
                lambda s: self.enqueue(
                    kind,
                    params,
                    session=s,
                    dedupe_key=dedupe_key,
                    lock_key=lock_key,
                    created_by=created_by,
                    channel_id=channel_id,
                    delay=delay,
                    schedule=schedule,
                    claim=claim,
                    wake=wake,
                )
            )
        now = time.time()
        values = self._row(kind, params, dedupe_key, delay)
        values.update(lock_key=lock_key, created_by=created_by, channel_id=channel_id, schedule=schedule)
        insert_stmt = table(Job).insert().returning(Job.id)
        if claim:
            values.update(
                state=RUNNING,
                worker=self.holder,
                lease_until=now + self.lease_seconds,
                attempts=1,
                started_at=utcnow(),
                dedupe_key=None,
            )
            dedupe_key = None
        if claim:
            try:
                with session.begin_nested():  # a running job of the same lock_key: a clear 409, not a 500
                    job_id = int(session.execute(insert_stmt.values(**values)).scalar_one())
            except IntegrityError:
                raise Busy(f"a {kind} job of {lock_key!r} runs already", code="job_running", lock=lock_key)
        elif dedupe_key is None:
            job_id = int(session.execute(insert_stmt.values(**values)).scalar_one())
        else:
            got = _insert_deduped(session, values)
            if got is None:
                got = session.scalar(select(Job.id).where(Job.dedupe_key == dedupe_key, Job.state == QUEUED))
                if got is None:  # pragma: no cover - the queued one was claimed between the two statements
                    raise Conflict(f"job {dedupe_key!r} changed meanwhile; try again", code="job_race")
            job_id = int(got)
        if not claim and wake and delay <= 0:  # a delayed job: the workers' poll finds it once it is due
            after_commit(session, self._wake.set)
        return job_id

    def enqueue_merged(
        self,
        kind: str,
        params: JsonDict,
        merge: Callable[[JsonDict, JsonDict], JsonDict | None],
        *,
        session: Session,
        key: str,
        delay: float,
    ) -> int:
        """Coalesce while queued: a job of ``key`` still queued takes ``params`` in (``merge(queued,
        params)``; its row stays locked until the caller's commit, so no worker claims it half merged);
        else a new job of that key, runnable ``delay`` seconds from now so that the changes of the next
        moments join it. ``merge`` returns None when the two do not go together (e.g. too large): then a
        job of its own. Part of the caller's transaction, as ``enqueue(session=...)``."""
        for _ in range(3):
            row = session.execute(
                select(Job.id, Job.params).where(Job.dedupe_key == key, Job.state == QUEUED).with_for_update()
            ).first()
            if row is not None:
                merged = merge(json.loads(row[1] or "{}"), params)
                if merged is None:
                    break
                session.execute(
                    update(Job).where(Job.id == row[0]).values(params=_json(merged, "parameters"), updated_at=utcnow())
                )
                return int(row[0])
            got = _insert_deduped(session, self._row(kind, params, key, delay))
            if got is not None:  # a new job: runnable in ``delay`` seconds, when the workers' poll finds it
                if delay <= 0:
                    after_commit(session, self._wake.set)
                return got
            # another transaction queued one of this key meanwhile (and committed): merge into it
        return self.enqueue(kind, params, session=session, delay=delay)

    def _row(self, kind: str, params: JsonDict | None, dedupe_key: str | None, delay: float) -> dict[str, Any]:
        """The column values of a new queued job of ``kind``."""
        spec = self.kinds.require(kind)
        return {
            "kind": kind,
            "params": _json(params or {}, "parameters"),
            "state": QUEUED,
            "lane": spec.lane,
            "priority": spec.priority,
            "dedupe_key": dedupe_key,
            "attempts": 0,
            "max_attempts": spec.max_attempts,
            "run_after": time.time() + delay,
            "lease_until": 0.0,
            "cancel_requested": False,
            "phase": "",
            "done": 0,
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }

    def claimed(self, job_id: int) -> Claimed | None:
        """The job ``job_id`` if this holder is running it (after ``enqueue(..., claim=True)``)."""
        with self.db.session() as s:
            row = s.execute(
                select(Job.id, Job.kind, Job.params, Job.attempts, Job.max_attempts).where(*self._mine(job_id))
            ).first()
        if row is None:
            return None
        return Claimed(int(row[0]), row[1], json.loads(row[2] or "{}"), int(row[3]), int(row[4]))

    # -- reading -------------------------------------------------------------------------------------
    def get(self, job_id: int) -> JsonDict:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found", code="job_not_found", job=job_id)
            return job_dict(job)

    def list_jobs(
        self,
        *,
        kinds: Iterable[str] = (),
        states: Iterable[str] = (),
        created_by: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[JsonDict]:
        q = select(Job)
        if kinds := list(kinds):
            q = q.where(Job.kind.in_(kinds))
        if states := list(states):
            q = q.where(Job.state.in_(states))
        if created_by is not None:
            q = q.where(Job.created_by == created_by)
        if before_id is not None:
            q = q.where(Job.id < before_id)
        with self.db.session() as s:
            return [job_dict(j) for j in s.scalars(q.order_by(Job.id.desc()).limit(limit))]

    def active(self, lock_key: str, session: Session | None = None) -> int | None:
        """The id of a queued or running job of ``lock_key``, if any."""
        q = select(Job.id).where(Job.lock_key == lock_key, Job.state.in_((QUEUED, RUNNING))).limit(1)
        if session is not None:
            return session.scalar(q)
        with self.db.session() as s:
            return s.scalar(q)

    # -- cancel ----------------------------------------------------------------------------------------
    def cancel(self, job_id: int) -> str:
        """A queued job is cancelled at once; a running one is asked to stop (its handler sees
        ``run.cancelled``). Returns the job's state afterwards."""

        def work(s: Session) -> str:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found", code="job_not_found", job=job_id)
            if job.state == QUEUED:
                job.state, job.finished_at, job.error = CANCELLED, utcnow(), "cancelled before it started"
            elif job.state == RUNNING:
                job.cancel_requested = True
            job.updated_at = utcnow()
            return job.state

        return self.db.run_write(work)

    # -- for workers -----------------------------------------------------------------------------------
    def claim(self, lanes: tuple[str, ...], job_id: int | None = None) -> Claimed | None:
        """Take the next runnable job of ``lanes`` (or exactly ``job_id``, queued) for this holder."""
        now = time.time()
        if job_id is None:
            known = self.kinds.names()
            busy = select(Job.lock_key).where(Job.state == RUNNING, Job.lock_key.is_not(None))
            runnable = select(Job.id).where(
                Job.state == QUEUED,
                Job.run_after <= now,
                Job.lane.in_(lanes),
                Job.kind.in_(known),
                or_(Job.lock_key.is_(None), Job.lock_key.not_in(busy)),
            )
            with self.db.session() as s:  # a read first: an idle poll takes no write lock (SQLite)
                if s.scalar(runnable.limit(1)) is None:
                    return None
            pick = (
                runnable.order_by(Job.priority.desc(), Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
        else:
            pick = select(Job.id).where(Job.id == job_id).scalar_subquery()
        stmt = (
            update(Job)
            .where(Job.id == pick, Job.state == QUEUED)
            .values(
                state=RUNNING,
                worker=self.holder,
                lease_until=now + self.lease_seconds,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                started_at=utcnow(),
                updated_at=utcnow(),
            )
            .returning(Job.id, Job.kind, Job.params, Job.attempts, Job.max_attempts)
        )
        try:
            row = self.db.run_write(lambda s: s.execute(stmt).first())
        except IntegrityError:  # another worker claimed a job of the same lock_key at the same moment
            return None
        if row is None:
            return None
        return Claimed(int(row[0]), row[1], json.loads(row[2] or "{}"), int(row[3]), int(row[4]))

    def _mine(self, job_id: int) -> Any:
        return (Job.id == job_id, Job.worker == self.holder, Job.state == RUNNING)

    def report(self, job_id: int, phase: str, done: int, total: int | None) -> bool:
        """Write progress; False when the job is no longer ours."""

        def work(s: Session) -> bool:
            res = s.execute(
                update(Job)
                .where(*self._mine(job_id))
                .values(phase=phase[:200], done=done, total=total, updated_at=utcnow())
            )
            return bool(affected(res))

        return self.db.run_write(work)

    def heartbeat(self, job_ids: list[int]) -> tuple[set[int], set[int]]:
        """Renew the leases of our running jobs. Returns (ids asked to cancel, ids no longer ours)."""
        if not job_ids:
            return set(), set()
        now = time.time()

        def work(s: Session) -> tuple[set[int], set[int]]:  # one statement: renew, and read the cancel flags
            rows = s.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.worker == self.holder, Job.state == RUNNING)
                .values(lease_until=now + self.lease_seconds, heartbeat_at=now)
                .returning(Job.id, Job.cancel_requested)
            ).all()
            return {r[0] for r in rows if r[1]}, set(job_ids) - {r[0] for r in rows}

        return self.db.run_write(work)

    def finish(self, job_id: int, result: JsonDict | None, *, quiet: bool = False, state: str = SUCCEEDED) -> bool:
        """Mark our job succeeded (or ``state``: a handler that stopped early on a cancel request).
        ``quiet`` with no result deletes the row (frequent housekeeping)."""

        def work(s: Session) -> bool:
            if quiet and not result and state == SUCCEEDED:
                res = s.execute(delete(Job).where(*self._mine(job_id)))
            else:
                text = None if result is None else _truncated(result)
                res = s.execute(
                    update(Job)
                    .where(*self._mine(job_id))
                    .values(
                        state=state,
                        result=text,
                        error=None if state == SUCCEEDED else "cancelled",
                        finished_at=utcnow(),
                        updated_at=utcnow(),
                        lease_until=0.0,
                    )
                )
            return bool(affected(res))

        done = self.db.run_write(work)
        if not done:
            log.warning("job finished after another worker took it over", extra={"job_id": job_id})
        return done

    def fail(self, job_id: int, error: str, *, retry: bool, state: str = FAILED, free_attempt: bool = False) -> str:
        """Our job failed (or was cancelled / interrupted by a shutdown). With ``retry`` and attempts left,
        it is queued again after a back-off; ``free_attempt`` does not count this attempt (a shutdown)."""
        now = time.time()

        def work(s: Session) -> str:
            job = s.scalar(select(Job).where(*self._mine(job_id)))
            if job is None:
                return ""
            attempts = job.attempts - 1 if free_attempt else job.attempts
            if retry and attempts < job.max_attempts and not self._queued_twin(s, job):
                backoff = 0.0 if free_attempt else min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))
                job.state, job.run_after, job.attempts = QUEUED, now + backoff, attempts
                job.worker, job.lease_until = None, 0.0
            else:
                job.state, job.finished_at, job.lease_until = state, utcnow(), 0.0
            job.error = error[:4000]
            job.updated_at = utcnow()
            return job.state

        return self.db.run_write(work)

    @staticmethod
    def _queued_twin(s: Session, job: Job) -> bool:
        """Another job with the same dedupe key waits already (it will do the work: no retry)."""
        if job.dedupe_key is None:
            return False
        return s.scalar(select(Job.id).where(Job.dedupe_key == job.dedupe_key, Job.state == QUEUED)) is not None

    def reap(self) -> list[int]:
        """Give back the jobs of dead workers: queued again, or failed once their attempts are used up."""
        now = time.time()
        with self.db.session() as s:
            rows = s.execute(select(Job.id, Job.worker, Job.lease_until).where(Job.state == RUNNING)).all()
        lost = [(jid, w) for jid, w, until in rows if w != self.holder and (until < now or holder_is_dead(w))]
        done = []
        for job_id, worker in lost:

            def work(s: Session, job_id: int = job_id, worker: str | None = worker) -> bool:
                job = s.scalar(select(Job).where(Job.id == job_id, Job.worker == worker, Job.state == RUNNING))
                if job is None:
                    return False
                msg = f"the worker running it ({worker}) stopped"
                spec = self.kinds.get(job.kind)
                allowed = job.max_attempts + (spec.takeovers if spec is not None else 0)
                if job.attempts < allowed and not self._queued_twin(s, job):
                    job.state, job.worker, job.lease_until, job.run_after = QUEUED, None, 0.0, now
                    job.error = msg + "; queued again"
                else:
                    job.state, job.finished_at, job.lease_until, job.error = FAILED, utcnow(), 0.0, msg
                job.updated_at = utcnow()
                return True

            if self.db.run_write(work):
                log.warning("job of a stopped worker taken back", extra={"job_id": job_id, "holder": worker})
                done.append(job_id)
        return done

    def purge(self, older_than_days: float) -> int:
        """Delete finished jobs older than the retention."""
        cutoff = utcnow().timestamp() - older_than_days * 86400

        def work(s: Session) -> int:
            from datetime import UTC, datetime

            res = s.execute(
                delete(Job).where(Job.state.in_(FINISHED), Job.finished_at < datetime.fromtimestamp(cutoff, UTC))
            )
            return affected(res)

        return self.db.run_write(work)

    def wait(
        self, job_id: int, timeout: float, poll: float = 0.1, on_poll: Callable[[JsonDict], None] | None = None
    ) -> JsonDict:
        """Poll until the job has finished (or ``timeout``); returns its last state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_poll is not None:
                on_poll(job)
            if job["state"] in FINISHED or time.monotonic() >= deadline:
                return job
            time.sleep(poll)


def _truncated(result: JsonDict) -> str:
    try:
        return _json(result, "result")
    except ValueError as exc:
        return json.dumps({"truncated": True, "error": str(exc)})


__all__ = ["CANCELLED", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED", "Claimed", "JobQueue", "job_dict"]
