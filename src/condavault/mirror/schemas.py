"""Pydantic I/O of the mirror API (the config itself is :class:`condavault.mirror.config.MirrorConfig`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Progress(BaseModel):
    total_items: int = 0
    done_items: int = 0
    total_bytes: int = 0
    done_bytes: int = 0


class RunOut(BaseModel):
    id: int
    status: str
    phase: str
    trigger: str
    dry_run: bool
    cancel_requested: bool
    started_at: datetime
    finished_at: datetime | None = None
    plan_seconds: float | None = None
    apply_seconds: float | None = None
    progress: Progress
    counts: dict[str, Any]
    failures: list[dict[str, Any]]
    error: str | None = None
    job_id: int | None = Field(None, description="the job running it (GET /api/jobs/{id})")


class MirrorOut(BaseModel):
    name: str
    channel: str
    mode: str
    cron: str | None
    upstream: str
    subdirs: list[str]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    running: bool = False
    last_run: RunOut | None = None
    items: dict[str, Any] | None = None


class ItemOut(BaseModel):
    subdir: str
    filename: str
    name: str
    kept: bool
    flag: bool
    filter: str
    rule: str
    value: str
    state: str
    sha256: str | None = None
    size: int | None = None
    error: str | None = None


class ExplainOut(BaseModel):
    mirror: str
    query: str
    decisions: list[ItemOut]


class YamlIn(BaseModel):
    yaml: str
