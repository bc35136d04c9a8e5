"""``/api/quarantine``, ``/api/scanning``: quarantine review (``quarantine:review``: administrators and
whoever is granted it), the block list (system administrators), channel scan policies (channel managers),
the verdict of a package (readers of its channel) and the rescan job (system administrators)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.channels.models import Record
from condavault.context import Context
from condavault.errors import Busy, NotFound
from condavault.scanning import services as svc
from condavault.scanning.engine import has_tags
from condavault.scanning.models import ScanVerdict
from condavault.scanning.plugin import RESCAN_KIND, RESCAN_LOCK
from condavault.web.deps import MAX_ID, CtxDep, IdentityDep
from condavault.web.limits import body_spec

router = APIRouter(tags=["scanning"])


class PolicyIn(BaseModel):
    quarantine_suspicious: bool


class RescanIn(BaseModel):
    limit: int | None = None
    restart: bool = False


@router.get("/api/quarantine", summary="Quarantined files (oldest first; page with ?after=<last id>)")
def list_quarantine(
    channel: str | None = Query(None, max_length=100),
    after: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(100, ge=1, le=svc.MAX_LIST),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    authorize(identity, Permission.QUARANTINE_REVIEW)
    with ctx.db.session() as s:
        items = svc.list_quarantined(s, channel=channel, after=after, limit=limit)
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


QID = Path(ge=1, le=2**62)


@router.get("/api/quarantine/{qid}", summary="One quarantined file: its verdict, every finding, its record")
def show_quarantine(qid: int = QID, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.QUARANTINE_REVIEW)
    _check_id(qid)
    with ctx.db.session() as s:
        row, channel = svc.get_quarantined(s, qid)
        return svc.row_dict(row, channel.name, full=True)


@router.post("/api/quarantine/{qid}/release", summary="Release a quarantined file into its channel (index runs)")
def release_quarantine(qid: int = QID, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.QUARANTINE_REVIEW)
    _check_id(qid)
    return svc.release(ctx, qid, identity)


@router.delete("/api/quarantine/{qid}", summary="Delete a quarantined file (its blob too, unless shared)")
def delete_quarantine(qid: int = QID, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.QUARANTINE_REVIEW)
    _check_id(qid)
    return svc.delete_quarantined(ctx, qid, identity)


@router.post(
    "/api/scanning/blocklist",
    summary="Import sha256 block list entries (plain lines or OSSF/OSV JSON)",
    openapi_extra=body_spec("metadata", Permission.SYSTEM_ADMIN),
)
async def import_blocklist(
    request: Request,
    source: str = Query("api", max_length=200),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    entries = svc.parse_blocklist(await request.body())
    out = svc.import_blocklist(ctx, entries, source, identity)
    ctx.domains.scanning.blocked.invalidate()
    return out


@router.delete("/api/scanning/blocklist/{sha256}", summary="Remove one sha256 from the block list")
def remove_blocked(sha256: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    if not svc.remove_blocked(ctx, sha256, identity):
        raise NotFound("that sha256 is not on the block list", code="not_blocked")
    ctx.domains.scanning.blocked.invalidate()
    return {"removed": sha256.lower()}


@router.get("/api/channels/{name}/scanning/policy", summary="A channel's scan policy")
def get_policy(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    return {"channel": ref.name, **svc.get_policy(ctx, ref.id)}


@router.put("/api/channels/{name}/scanning/policy", summary="Set a channel's scan policy")
def put_policy(name: str, body: PolicyIn, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    return svc.set_policy(ctx, ref.id, ref.name, body.quarantine_suspicious, identity)


@router.get(
    "/api/channels/{name}/scanning/packages",
    summary="Packages of a channel by install-time code (?has=post-link) or by verdict",
)
def find_packages(
    name: str,
    has: str | None = Query(
        None,
        max_length=40,
        pattern=r"^[a-z-]+$",
        description="a tag: pre-link, post-link, pre-unlink, activate, deactivate, env-vars, "
        "menuinst, entry-points, startup-hook, network, exec",
    ),
    verdict: str | None = Query(None, pattern=r"^(clean|suspicious|malicious)$"),
    after: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(100, ge=1, le=1000),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_READ)
    items: list[dict[str, Any]] = []
    cursor = after
    with ctx.db.session() as s:
        for _ in range(20):  # at most 20 pages of 500 rows looked at per request
            q = (
                select(
                    Record.id,
                    Record.subdir,
                    Record.filename,
                    ScanVerdict.verdict,
                    ScanVerdict.rule,
                    ScanVerdict.properties,
                )
                .join(ScanVerdict, ScanVerdict.sha256 == Record.sha256)
                .where(Record.channel_id == ref.id, Record.removed.is_(False), Record.id > cursor)
                .order_by(Record.id)
                .limit(500)
            )
            if verdict:
                q = q.where(ScanVerdict.verdict == verdict)
            rows = s.execute(q).all()
            for rid, subdir, filename, v, rule, props in rows:
                cursor = rid
                tags = has_tags(json.loads(props or "{}"))
                if has is None or has in tags:
                    items.append(
                        {"id": rid, "subdir": subdir, "filename": filename, "verdict": v, "rule": rule, "has": tags}
                    )
                    if len(items) >= limit:
                        break
            if len(items) >= limit or len(rows) < 500:
                break
    done = len(items) < limit and (not rows or len(rows) < 500)
    return {"channel": ref.name, "items": items, "next_after": None if done else cursor}


@router.get(
    "/api/channels/{name}/scanning/files/{subdir}/{filename}",
    summary="The scan verdict and install-time code properties of a package",
)
def package_verdict(
    name: str, subdir: str, filename: str, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_READ)
    with ctx.db.session() as s:
        sha = s.scalar(
            select(Record.sha256).where(
                Record.channel_id == ref.id,
                Record.subdir == subdir,
                Record.filename == filename,
                Record.removed.is_(False),
            )
        )
        if sha is None:
            raise NotFound(f"{subdir}/{filename} is not in channel {ref.name!r}", code="file_not_found")
        verdict = svc.verdict_of(s, sha)
    return {"channel": ref.name, "subdir": subdir, "filename": filename, "sha256": sha, "scan": verdict}


@router.post("/api/scanning/rescan", status_code=202, summary="Rescan stored packages under the current rules (a job)")
def start_rescan(
    body: RescanIn | None = None, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    busy = ctx.jobs.active(RESCAN_LOCK)
    if busy is not None:
        raise Busy(f"a rescan is already running (job {busy})", code="rescan_running", job=busy)
    params: dict[str, Any] = {}
    if body is not None and body.limit:
        params["limit"] = max(1, min(body.limit, 10_000_000))
    if body is not None and body.restart:
        params["restart"] = True
    job = ctx.jobs.enqueue(RESCAN_KIND, params, lock_key=RESCAN_LOCK, created_by=identity.username)
    ctx.record_change(identity, "scanning:rescan", "all", None, params)
    return {"job_id": job, "ruleset": ctx.domains.scanning.ruleset.version}


def _check_id(qid: int) -> None:
    if not 0 < qid <= MAX_ID:
        raise NotFound(f"no quarantined file {qid}", code="quarantined_not_found")
