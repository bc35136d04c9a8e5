"""``/api/bundles``: air-gap bundle bookkeeping and the on-demand scan of the drop folder (administrators
only: bundles change channels and vulnerability data wholesale)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from condavault.airgap.models import BundleChannelState, BundleExport, BundleImport
from condavault.airgap.plugin import IMPORT_KIND, IMPORT_LOCK
from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.context import Context
from condavault.signing.keys import load_or_create
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api/bundles", tags=["bundles"])


@router.get("", summary="Bundles exported and imported by this server, and the state of each target")
def status(
    limit: int = Query(50, ge=1, le=1000), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.session() as s:
        exports = [
            {
                "bundle_id": r.bundle_id,
                "parent_id": r.parent_id,
                "serial": r.serial,
                "kinds": r.kinds,
                "created_at": r.created_at.isoformat(),
                "summary": _summary(r.summary),
            }
            for r in s.scalars(select(BundleExport).order_by(BundleExport.id.desc()).limit(limit))
        ]
        imports = [
            {
                "bundle_id": r.bundle_id,
                "parent_id": r.parent_id,
                "origin_key": r.origin_key,
                "serial": r.serial,
                "state": r.state,
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "summary": _summary(r.summary),
            }
            for r in s.scalars(select(BundleImport).order_by(BundleImport.id.desc()).limit(limit))
        ]
        targets = [
            {
                "origin_key": r.origin_key,
                "target": r.target,
                "bundle_id": r.bundle_id,
                "serial": r.serial,
                "watermark": r.watermark,
            }
            for r in s.scalars(select(BundleChannelState).order_by(BundleChannelState.target))
        ]
    key = load_or_create(ctx.settings).public
    return {"key": {"id": key.id, "public_key": key.text}, "exports": exports, "imports": imports, "targets": targets}


@router.post("/scan", status_code=202, summary="Import the bundles of the drop folder now (a job)")
def scan(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    busy = ctx.jobs.active(IMPORT_LOCK)
    if busy is not None:  # a scan queued or running will see what is in the folder: that one is the answer
        return {"job_id": busy, "already_running": True}
    job = ctx.jobs.enqueue(IMPORT_KIND, {"on_demand": True}, lock_key=IMPORT_LOCK, created_by=identity.username)
    ctx.record_change(identity, "bundle:scan", str(ctx.settings.airgap_path))
    return {"job_id": job, "already_running": False}


def _summary(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}
