"""Wire the scanning domain into a Context: the scanning stage on the shared Ingestor (every way in:
uploads, active and passive mirrors, bundle imports use it), the quarantine's blob column, and the rescan
job (``scanning.rescan``).

The rescan walks the stored records in id order, ``batch`` at a time, from a cursor kept in
``scan_state`` (so a stopped or failed run resumes where it was), and rescans those whose verdict was
reached under another rule-set version (or that have none). A record that is now ``malicious`` (or
``suspicious`` under its channel's policy) leaves the index for the quarantine."""

from __future__ import annotations

import json
import logging
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from condavault.channels.blobs import BLOB_COLUMNS
from condavault.channels.events import RecordsChanged
from condavault.channels.models import Channel, Record
from condavault.channels.records import remove_by_keys
from condavault.db.base import utcnow
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec
from condavault.scanning.models import QuarantinedFile, ScanChannelPolicy, ScanState, ScanVerdict
from condavault.scanning.stage import ScanStage, put_verdict

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
RESCAN_KIND = "scanning.rescan"
RESCAN_LOCK = "scanning.rescan"
CURSOR_KEY = "rescan.cursor"
DEFAULT_BATCH = 200


def wire(ctx: Context) -> ScanStage:
    stage = ScanStage(ctx)
    if QuarantinedFile.sha256 not in BLOB_COLUMNS:  # a quarantined file's blob is referenced: never collected
        BLOB_COLUMNS.append(QuarantinedFile.sha256)
    ing = ctx.ingestor
    if stage.enabled:
        ing.visitor = stage.visitor
        ing.checks.append(stage.check)
        ing.pre_store.append(stage.pre_store)
        ing.on_write.append(stage.on_write)
    ing.on_hold.append(stage.on_hold)
    ctx.kinds.register(
        JobKind(
            RESCAN_KIND,
            lambda run: rescan(ctx, stage, run),
            max_attempts=3,
            description="rescan stored packages under the current scan rules",
        )
    )
    return stage


def schedules(ctx: Context) -> list[ScheduleSpec]:
    """The bounded rescan (resumes from its cursor), daily by default: rules shipped with a new version, or
    added to ``scan_rules_dir``, reach the stored packages without anyone starting it."""
    if not ctx.settings.scanning:
        return []
    return [
        ScheduleSpec(
            RESCAN_KIND,
            RESCAN_KIND,
            cron=ctx.settings.scan_rescan_cron,
            params={"limit": ctx.settings.scan_rescan_limit},
            lock_key=RESCAN_LOCK,
        )
    ]


def _cursor(ctx: Context) -> int:
    with ctx.db.session() as s:
        row = s.get(ScanState, CURSOR_KEY)
        return int(row.value) if row is not None and row.value.isdigit() else 0


def _set_cursor(s: Session, value: int) -> None:
    row = s.get(ScanState, CURSOR_KEY)
    if row is None:
        s.add(ScanState(key=CURSOR_KEY, value=str(value)))
    else:
        row.value = str(value)


def rescan(ctx: Context, stage: ScanStage, run: JobRun | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """Rescan stale verdicts from the stored cursor; ``limit`` (or the job's ``limit`` param) bounds the
    records looked at in this run. Returns counts and whether the walk is complete (cursor reset)."""
    params = run.params if run is not None else {}
    limit = int(params.get("limit") or limit or 0) or None
    batch = max(1, min(int(params.get("batch") or DEFAULT_BATCH), 5000))
    if params.get("restart"):
        ctx.db.run_write(lambda s: _set_cursor(s, 0))
    cursor = _cursor(ctx)
    version = stage.ruleset.version
    counts = {"looked_at": 0, "rescanned": 0, "quarantined": 0, "missing_blob": 0}
    while limit is None or counts["looked_at"] < limit:
        if run is not None:
            run.check_cancelled()
        take = batch if limit is None else min(batch, limit - counts["looked_at"])
        with ctx.db.session() as s:
            rows = s.execute(
                select(Record.id, Record.channel_id, Record.subdir, Record.filename, Record.sha256, Record.name)
                .outerjoin(ScanVerdict, ScanVerdict.sha256 == Record.sha256)
                .where(
                    Record.id > cursor,
                    Record.has_blob.is_(True),
                    Record.removed.is_(False),
                    or_(ScanVerdict.sha256.is_(None), ScanVerdict.ruleset != version),
                )
                .order_by(Record.id)
                .limit(take)
            ).all()
        if not rows:
            ctx.db.run_write(lambda s: _set_cursor(s, 0))
            return {**counts, "complete": True, "ruleset": version}
        for rid, channel_id, subdir, filename, sha, _name in rows:
            counts["looked_at"] += 1
            cursor = rid
            if not sha or not ctx.blobs.exists(sha):
                counts["missing_blob"] += 1
                continue
            with ctx.blobs.materialize(sha) as blob_path:
                res = stage.scanner.scan(blob_path, filename, sha, stage.blocked)
            counts["rescanned"] += 1
            hold = _should_hold(ctx, channel_id, res.verdict)
            if hold:
                counts["quarantined"] += 1
            ctx.db.run_write(
                partial(
                    _apply, ctx, channel_id=channel_id, subdir=subdir, filename=filename, sha=sha, res=res, hold=hold
                )
            )
        ctx.db.run_write(partial(_set_cursor, value=cursor))
        if run is not None:
            run.progress(phase="rescan", done=counts["looked_at"])
    return {**counts, "complete": False, "ruleset": version, "cursor": cursor}


def _should_hold(ctx: Context, channel_id: int, verdict: str) -> bool:
    if verdict == "malicious":
        return True
    if verdict != "suspicious":
        return False
    with ctx.db.session() as s:
        pol = s.get(ScanChannelPolicy, channel_id)
    return pol.quarantine_suspicious if pol is not None else ctx.settings.scan_quarantine_suspicious


def _apply(
    ctx: Context, s: Session, *, channel_id: int, subdir: str, filename: str, sha: str, res: Any, hold: bool
) -> None:
    put_verdict(s, sha, res)
    if not hold:
        return
    channel = s.get(Channel, channel_id)
    rec = s.scalar(
        select(Record).where(Record.channel_id == channel_id, Record.subdir == subdir, Record.filename == filename)
    )
    if channel is None or rec is None:
        return
    d = res.to_dict()
    extra = {
        "about": json.loads(rec.about) if rec.about else None,
        "run_exports": json.loads(rec.run_exports) if rec.run_exports else None,
        "paths_summary": json.loads(rec.paths_summary) if rec.paths_summary else None,
    }
    existing = s.scalar(
        select(QuarantinedFile).where(
            QuarantinedFile.channel_id == channel_id,
            QuarantinedFile.subdir == subdir,
            QuarantinedFile.filename == filename,
        )
    )
    if existing is not None:
        s.delete(existing)
        s.flush()
    s.add(
        QuarantinedFile(
            channel_id=channel_id,
            subdir=subdir,
            filename=filename,
            sha256=sha,
            size=rec.size or 0,
            record=rec.record,
            extra=json.dumps(extra, sort_keys=True),
            verdict=d["verdict"],
            rule=d["rule"],
            path=d["path"],
            findings=json.dumps(d["findings"]),
            ruleset=res.ruleset,
            source_url=rec.source_url,
            uploaded_by=rec.uploaded_by,
            state="quarantined",
            created_at=utcnow(),
        )
    )
    s.flush()  # the quarantine row references the blob before the record that did goes
    remove_by_keys(s, channel, [(subdir, filename)])
    ctx.events.record(s, RecordsChanged(channel_id, (subdir,), index=True))
    ctx.record_change(
        SimpleNamespace(username="scanning.rescan"),
        "quarantine:hold",
        f"{channel.name}/{subdir}/{filename}",
        None,
        {"verdict": d["verdict"], "rule": d["rule"], "path": d["path"], "sha256": sha},
        session=s,
    )
