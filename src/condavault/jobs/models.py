"""The durable job queue's tables (design.md §5): one row per job, one row per schedule.

A job is ``queued`` until a worker claims it (``running``, with a lease the worker's heartbeat renews),
then ``succeeded``, ``failed`` or ``cancelled``. A job whose worker died goes back to ``queued`` (or to
``failed`` once its attempts are used up). Two keys order the work of many processes:

* ``dedupe_key`` -- at most one *queued* job per key (a partial unique index): enqueueing a second one
  returns the first (a burst of requests becomes one job, e.g. a schedule firing while its last job waits);
* ``lock_key`` -- at most one *running* job per key (a partial unique index): a worker skips a job whose
  key another running job holds (never two runs of one mirror at once).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from condavault.db.base import Base, BigInt, UTCDateTime, utcnow

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "state", "run_after"),
        Index("ix_jobs_kind", "kind", "id"),
        Index(
            "uq_jobs_dedupe_queued",
            "dedupe_key",
            unique=True,
            sqlite_where=text("state = 'queued'"),
            postgresql_where=text("state = 'queued'"),
        ),
        Index(
            "uq_jobs_lock_running",
            "lock_key",
            unique=True,
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    params: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(20), default=QUEUED)
    lane: Mapped[str] = mapped_column(String(20), default="long")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lock_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[float] = mapped_column(Float, default=0.0)  # unix seconds
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)  # host:pid:nonce of the runner
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    # unix seconds of the last lease renewal (0015_rolling; NULL for rows of the previous version)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    phase: Mapped[str] = mapped_column(String(200), default="")
    done: Mapped[int] = mapped_column(BigInt, default=0)
    total: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    channel_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no FK: history outlives channels
    schedule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobSchedule(Base):
    """A job fired on a cron expression or every N seconds, once across every process: the process that
    moves ``next_at`` forward (a compare-and-set on its old value) enqueues the job."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    params: Mapped[str] = mapped_column(Text, default="{}")
    cron: Mapped[str | None] = mapped_column(String(100), nullable=True)
    every_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    lock_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    next_at: Mapped[float] = mapped_column(Float)
    last_fired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(20), default="system")  # system (declared in code) | mirror
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
