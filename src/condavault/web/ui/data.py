"""Read-only data the package and channel pages show that no API route returns in this shape: the package
names of a channel, download counts per day. Every function takes channel
ids the caller was already allowed to read (``ctx.channels.for_read`` / ``vulns.api.readable``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from condavault.audit.models import DownloadEvent
from condavault.channels.models import Record

_NAME_END = re.compile(r"[\s\[=<>!~,]")


def package_names(
    s: Session, channel_id: int, *, prefix: str = "", limit: int = 100, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """(name, files, latest upload) per package name of a channel, paged; and the number of names."""
    q = select(Record.name, func.count(), func.max(Record.timestamp)).where(Record.channel_id == channel_id)
    n = select(func.count(func.distinct(Record.name))).where(Record.channel_id == channel_id)
    if prefix:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = q.where(Record.name.like(like, escape="\\"))
        n = n.where(Record.name.like(like, escape="\\"))
    rows = s.execute(q.group_by(Record.name).order_by(Record.name).limit(limit).offset(offset)).all()
    return [{"name": r[0], "files": int(r[1]), "timestamp": r[2]} for r in rows], int(s.scalar(n) or 0)


def dep_name(spec: str) -> str:
    return _NAME_END.split(spec.strip(), maxsplit=1)[0]


FINDINGS_SHOWN = 50


def build_checks(s: Session, channel: str, record: Record) -> dict[str, Any]:
    """What the server found out about one build's file: its scan verdict with each finding and the
    install-time code it carries (``scanning``), and its signatures / attestations outcome with the links
    to the sidecar and the server's admission statement (``signing``). Read from the stored rows only."""
    from condavault.scanning.engine import has_tags
    from condavault.scanning.services import verdict_of
    from condavault.signing.models import RecordTrust
    from condavault.signing.service import trust_summary

    scan = verdict_of(s, record.sha256)
    if scan is not None:
        findings = [f for f in scan["findings"] if isinstance(f, dict)]
        scan["findings"], scan["more_findings"] = findings[:FINDINGS_SHOWN], max(0, len(findings) - FINDINGS_SHOWN)
        scan["has"] = has_tags(scan["properties"]) if isinstance(scan["properties"], dict) else []
    trust = trust_summary(s.get(RecordTrust, record.id))
    base = f"/api/repo/{quote(channel, safe='')}/{record.subdir}/{quote(record.filename, safe='')}"
    trust["sidecar_url"] = f"{base}.sigs.{trust['attestations_sha256']}" if trust.get("attestations_sha256") else None
    trust["admission_url"] = f"{base}.admission.json" if record.has_blob else None
    trust["api_url"] = (
        f"/api/channels/{quote(channel, safe='')}/files/{record.subdir}/{quote(record.filename, safe='')}/signature"
    )
    return {"scan": scan, "trust": trust}


def downloads_per_day(s: Session, channel: str, name: str, days: int = 30) -> list[dict[str, Any]]:
    """Downloads of the package per day over the last ``days`` days (zeros included), oldest first."""
    today = datetime.now(UTC).date()
    start = today - timedelta(days=days - 1)
    since = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    per_day = func.date(DownloadEvent.at)
    rows = s.execute(
        select(per_day, func.count())
        .where(DownloadEvent.channel == channel, DownloadEvent.package == name, DownloadEvent.at >= since)
        .group_by(per_day)
    ).all()
    counts = {str(d)[:10]: int(n) for d, n in rows}
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).isoformat()
        out.append({"day": day, "count": counts.get(day, 0)})
    return out


def chart(points: list[dict[str, Any]], width: int = 300, height: int = 60) -> dict[str, Any]:
    """Bars of an inline SVG chart (computed here: templates only place them)."""
    peak = max((p["count"] for p in points), default=0)
    bar = width / max(1, len(points))
    bars = []
    for i, p in enumerate(points):
        h = 0.0 if peak == 0 else max(1.0, (height - 2) * p["count"] / peak)
        bars.append(
            {
                "x": round(i * bar + 0.5, 1),
                "y": round(height - h, 1),
                "w": round(max(1.0, bar - 1), 1),
                "h": round(h, 1),
                "day": p["day"],
                "count": p["count"],
            }
        )
    return {"width": width, "height": height, "bars": bars, "peak": peak, "total": sum(p["count"] for p in points)}


def about(record: Record) -> dict[str, Any]:
    try:
        data = json.loads(record.about) if record.about else {}
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def record_json(record: Record) -> dict[str, Any]:
    try:
        data = json.loads(record.record)
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def since_epoch_ms(ts: int | None) -> str:
    if not ts:
        return ""
    value = ts / 1000 if ts > 10**11 else ts
    return date.fromtimestamp(value).isoformat()
