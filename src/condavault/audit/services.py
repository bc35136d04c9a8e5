"""Querying, exporting and purging audit events."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from condavault.audit.models import ChangeEvent, DownloadEvent
from condavault.db.base import utcnow

DOWNLOAD_COLUMNS = [
    "id", "at", "username", "user_id", "token_id", "ip", "user_agent",
    "channel", "subdir", "filename", "package", "sha256", "size",
]  # fmt: skip
CHANGE_COLUMNS = ["id", "at", "username", "user_id", "token_id", "action", "target", "channel", "before", "after"]


def _window(q: Any, model: Any, start: datetime | None, end: datetime | None, channel: str | None) -> Any:
    """The filters both event kinds share: a time window [start, end) and a channel."""
    if start is not None:
        q = q.where(model.at >= start)
    if end is not None:
        q = q.where(model.at < end)
    if channel is not None:
        q = q.where(model.channel == channel)
    return q


def query_downloads(
    s: Session,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    user: str | None = None,
    channel: str | None = None,
    package: str | None = None,
    limit: int = 100_000,
    channels_visible: set[str] | None = None,
) -> list[dict[str, Any]]:
    q = _window(select(DownloadEvent), DownloadEvent, start, end, channel)
    if user is not None:
        q = (
            q.where(DownloadEvent.username == (user or None))
            if user != "anonymous"
            else q.where(DownloadEvent.username.is_(None))
        )
    if package is not None:
        q = q.where(DownloadEvent.package == package)
    if channels_visible is not None:
        q = q.where(DownloadEvent.channel.in_(channels_visible))
    rows = s.scalars(q.order_by(DownloadEvent.at, DownloadEvent.id).limit(limit))
    return [{c: getattr(r, c) for c in DOWNLOAD_COLUMNS} for r in rows]


def query_changes(
    s: Session,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    user: str | None = None,
    channel: str | None = None,
    package: str | None = None,
    action: str | None = None,
    limit: int = 100_000,
) -> list[dict[str, Any]]:
    q = _window(select(ChangeEvent), ChangeEvent, start, end, channel)
    if user is not None:
        q = q.where(ChangeEvent.username == user)
    if action is not None:
        q = q.where(ChangeEvent.action.startswith(action))
    if package is not None:
        q = q.where((ChangeEvent.before.contains(package)) | (ChangeEvent.after.contains(package)))
    out = []
    for r in s.scalars(q.order_by(ChangeEvent.at, ChangeEvent.id).limit(limit)):
        row = {c: getattr(r, c) for c in CHANGE_COLUMNS}
        row["before"] = json.loads(r.before) if r.before else None
        row["after"] = json.loads(r.after) if r.after else None
        out.append(row)
    return out


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else (json.dumps(r[c], default=str) if isinstance(r[c], dict | list) else r[c])
                for c in columns
            ]
        )
        if buf.tell() > 65536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def purge(s: Session, retention_days: int) -> dict[str, int]:
    if retention_days <= 0:
        return {"downloads": 0, "changes": 0}
    cutoff = utcnow() - timedelta(days=retention_days)
    d = s.execute(delete(DownloadEvent).where(DownloadEvent.at < cutoff)).rowcount  # type: ignore[attr-defined]
    c = s.execute(delete(ChangeEvent).where(ChangeEvent.at < cutoff)).rowcount  # type: ignore[attr-defined]
    return {"downloads": d or 0, "changes": c or 0}
