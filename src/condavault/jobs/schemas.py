"""Pydantic I/O of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class JobOut(BaseModel):
    id: int
    kind: str
    state: str = Field(description="queued | running | succeeded | failed | cancelled")
    params: dict[str, Any]
    phase: str
    done: int
    total: int | None
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_by: str | None
    schedule: str | None = Field(description="the schedule that fired it, if any")
    worker: str | None = Field(description="host:pid:id of the process that ran it last")
    heartbeat_at: float | None = Field(None, description="unix time its worker last renewed its lease")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class ScheduleOut(BaseModel):
    name: str
    kind: str
    cron: str | None
    every_seconds: float | None
    next_at: datetime
    last_fired_at: datetime | None
    last_job_id: int | None
    owner: str
