"""Quarantine review, the block list and channel scan policies (shared by the API and the CLI).

Every decision is an audited administrative change (``quarantine:release``, ``quarantine:delete``,
``blocklist:import``, ``scanning:policy``), written in the transaction of the change."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from condavault.channels import records
from condavault.channels.blobs import BlobGuard
from condavault.channels.events import IngestedFile, PackagesIngested, RecordsChanged
from condavault.channels.models import Channel
from condavault.db.base import utcnow
from condavault.errors import InvalidRequest, NotFound
from condavault.indexing.dirty import get_state
from condavault.jobs.holders import new_holder
from condavault.scanning.models import BlockedHash, QuarantinedFile, ScanChannelPolicy, ScanVerdict

if TYPE_CHECKING:
    from condavault.context import Context

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BLOCKLIST_BYTES = 256 * 1024 * 1024
MAX_LIST = 1000


def row_dict(row: QuarantinedFile, channel: str, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "channel": channel,
        "subdir": row.subdir,
        "filename": row.filename,
        "sha256": row.sha256,
        "size": row.size,
        "verdict": row.verdict,
        "rule": row.rule,
        "path": row.path,
        "ruleset": row.ruleset,
        "state": row.state,
        "uploaded_by": row.uploaded_by,
        "source_url": row.source_url,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
    if full:
        out["findings"] = json.loads(row.findings or "[]")
        out["record"] = json.loads(row.record)
    return out


def list_quarantined(
    s: Session, *, channel: str | None = None, after: int = 0, limit: int = 100, channel_ids: set[int] | None = None
) -> list[dict[str, Any]]:
    """Quarantined files, oldest first from id ``after``; ``channel_ids``: restrict to these channels."""
    q = (
        select(QuarantinedFile, Channel.name)
        .join(Channel, Channel.id == QuarantinedFile.channel_id)
        .where(QuarantinedFile.id > after)
        .order_by(QuarantinedFile.id)
        .limit(min(max(limit, 1), MAX_LIST))
    )
    if channel is not None:
        q = q.where(Channel.name == channel)
    if channel_ids is not None:
        q = q.where(QuarantinedFile.channel_id.in_(sorted(channel_ids)))
    return [row_dict(r, name) for r, name in s.execute(q)]


def get_quarantined(s: Session, qid: int) -> tuple[QuarantinedFile, Channel]:
    row = s.get(QuarantinedFile, qid)
    channel = s.get(Channel, row.channel_id) if row is not None else None
    if row is None or channel is None:
        raise NotFound(f"no quarantined file {qid}", code="quarantined_not_found", id=qid)
    return row, channel


def release(ctx: Context, qid: int, identity: object) -> dict[str, Any]:
    """Publish a quarantined file as a record of its channel, in one transaction that also removes its
    quarantine row and audits the decision; the answer comes once the index lists it (``indexed``)."""

    def work(s: Session) -> tuple[dict[str, Any], int, int]:
        row, channel = get_quarantined(s, qid)
        extra = json.loads(row.extra or "{}")
        entry = records.NewRecord(
            row.subdir,
            row.filename,
            json.loads(row.record),
            about=extra.get("about"),
            run_exports=extra.get("run_exports"),
            paths_summary=extra.get("paths_summary"),
            source_url=row.source_url,
            force=True,
            uploaded_by=row.uploaded_by,
        )
        (outcome,) = records.put_records(s, channel, [entry])  # the channels domain writes the record
        before = row_dict(row, channel.name)
        s.delete(row)
        ctx.events.record(s, RecordsChanged(channel.id, (row.subdir,), index=True))
        ctx.events.record(
            s,
            PackagesIngested(
                channel.id,
                channel.name,
                (IngestedFile(channel.name, row.subdir, row.filename, outcome.status, extra.get("security")),),
                getattr(identity, "username", None),
            ),
        )
        ctx.record_change(
            identity,
            "quarantine:release",
            f"{channel.name}/{row.subdir}/{row.filename}",
            before,
            {"status": outcome.status},
            session=s,
        )
        state = get_state(s, channel.id, row.subdir, create=False)
        return {**before, "state": "released", "status": outcome.status}, channel.id, state.change_seq if state else 0

    out, channel_id, seq = ctx.db.run_write(work)
    return {**out, "indexed": ctx.indexer.wait_for(channel_id, out["subdir"], seq, timeout=120)}


def delete_quarantined(ctx: Context, qid: int, identity: object) -> dict[str, Any]:
    """Drop a quarantined file: its row (audited) and then its blob, unless something else uses it."""

    def work(s: Session) -> dict[str, Any]:
        row, channel = get_quarantined(s, qid)
        before = row_dict(row, channel.name)
        s.delete(row)
        ctx.record_change(
            identity, "quarantine:delete", f"{channel.name}/{row.subdir}/{row.filename}", before, None, session=s
        )
        return before

    out = ctx.db.run_write(work)
    BlobGuard(ctx.db, ctx.blobs, new_holder()).delete_if_unreferenced(out["sha256"])
    return {**out, "state": "deleted"}


def set_policy(
    ctx: Context, channel_id: int, channel_name: str, quarantine_suspicious: bool, identity: object
) -> dict[str, Any]:
    def work(s: Session) -> None:
        row = s.get(ScanChannelPolicy, channel_id)
        before = row.quarantine_suspicious if row is not None else None
        if row is None:
            row = ScanChannelPolicy(channel_id=channel_id)
            s.add(row)
        row.quarantine_suspicious = quarantine_suspicious
        ctx.record_change(
            identity,
            "scanning:policy",
            channel_name,
            {"quarantine_suspicious": before},
            {"quarantine_suspicious": quarantine_suspicious},
            session=s,
        )

    ctx.db.run_write(work)
    return {"channel": channel_name, "quarantine_suspicious": quarantine_suspicious}


def get_policy(ctx: Context, channel_id: int) -> dict[str, Any]:
    with ctx.db.session() as s:
        row = s.get(ScanChannelPolicy, channel_id)
    return {
        "quarantine_suspicious": row.quarantine_suspicious
        if row is not None
        else ctx.settings.scan_quarantine_suspicious,
        "default": row is None,
    }


def verdict_of(s: Session, sha256: str | None) -> dict[str, Any] | None:
    """The stored verdict of a blob (for package pages and the API)."""
    if not sha256:
        return None
    row = s.get(ScanVerdict, sha256)
    if row is None:
        return None
    return {
        "verdict": row.verdict,
        "rule": row.rule,
        "path": row.path,
        "ruleset": row.ruleset,
        "properties": json.loads(row.properties or "{}"),
        "findings": json.loads(row.findings or "[]"),
        "scanned_at": row.scanned_at.isoformat() if row.scanned_at else None,
    }


# -- the block list ---------------------------------------------------------------------------------------
def parse_blocklist(data: bytes) -> list[tuple[str, str]]:
    """``(sha256, note)`` pairs from a block list file: plain lines (``<sha256> [note]``, ``#`` comments),
    or OSV / OSSF malicious-packages JSON (a report, a list of them, or JSON lines): every 64-hex value
    of a ``sha256`` key, noted with the report's id. Raises :class:`InvalidRequest` for anything else."""
    if len(data) > MAX_BLOCKLIST_BYTES:
        raise InvalidRequest(f"block list larger than {MAX_BLOCKLIST_BYTES} bytes", code="blocklist_too_large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("block list is not UTF-8 text", code="invalid_blocklist") from None
    stripped = text.lstrip()
    out: dict[str, str] = {}
    if stripped.startswith(("{", "[")):
        docs: list[Any] = []
        try:
            docs = [json.loads(text)]
        except (ValueError, RecursionError):
            try:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except (ValueError, RecursionError) as exc:
                raise InvalidRequest(
                    f"block list is neither sha256 lines nor JSON: {exc}", code="invalid_blocklist"
                ) from None
        for doc in docs:
            for report in doc if isinstance(doc, list) else [doc]:
                note = str(report.get("id", "")) if isinstance(report, dict) else ""
                for sha in _sha256_values(report):
                    out.setdefault(sha, note[:200])
        if not out:
            raise InvalidRequest("no sha256 values found in the JSON block list", code="invalid_blocklist")
        return sorted(out.items())
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sha, _, note = line.partition(" ")
        sha = sha.lower()
        if not SHA256.match(sha):
            raise InvalidRequest(f"line {n}: {sha[:80]!r} is not a sha256", code="invalid_blocklist", line=n)
        out.setdefault(sha, note.strip()[:200])
    return sorted(out.items())


def _sha256_values(doc: Any, depth: int = 0) -> Iterator[str]:
    if depth > 20:
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k.lower() == "sha256" and isinstance(v, str) and SHA256.match(v.lower()):
                yield v.lower()
            else:
                yield from _sha256_values(v, depth + 1)
    elif isinstance(doc, list):
        for v in doc:
            yield from _sha256_values(v, depth + 1)


def import_blocklist(ctx: Context, entries: list[tuple[str, str]], source: str, identity: object) -> dict[str, Any]:
    """Add entries to the block list (known ones are kept); audited. Returns counts."""
    source = source[:200]

    def work(s: Session) -> int:
        before = s.scalar(select(func.count()).select_from(BlockedHash)) or 0
        ins = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(BlockedHash)
        now = utcnow()
        for i in range(0, len(entries), 1000):
            rows = [
                {"sha256": sha, "source": source, "note": note, "added_at": now} for sha, note in entries[i : i + 1000]
            ]
            s.execute(ins.on_conflict_do_nothing(index_elements=["sha256"]), rows)
        after = s.scalar(select(func.count()).select_from(BlockedHash)) or 0
        ctx.record_change(
            identity, "blocklist:import", source, None, {"entries": len(entries), "added": after - before}, session=s
        )
        return int(after - before)

    added = ctx.db.run_write(work)
    return {"entries": len(entries), "added": added, "source": source}


def remove_blocked(ctx: Context, sha256: str, identity: object) -> bool:
    sha = sha256.lower()
    if not SHA256.match(sha):
        raise InvalidRequest(f"{sha256[:80]!r} is not a sha256", code="invalid_sha256")

    def work(s: Session) -> bool:
        n = s.execute(delete(BlockedHash).where(BlockedHash.sha256 == sha)).rowcount  # type: ignore[attr-defined]
        if n:
            ctx.record_change(identity, "blocklist:remove", sha, None, None, session=s)
        return bool(n)

    return ctx.db.run_write(work)
