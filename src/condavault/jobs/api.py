"""``/api/jobs``: every kind of job, from any process (mirror runs, CVE syncs, reindexing, purges, ...).

Administrators (``system:admin``) see and cancel every job; other signed-in users see the jobs they
started, and may cancel them unless their token is read-only. A job the caller may not see answers 404,
like one that does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Query

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed, authorize
from condavault.context import Context
from condavault.errors import NotFound, PermissionDenied, Unauthenticated
from condavault.jobs.models import STATES
from condavault.jobs.schemas import JobOut, ScheduleOut
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


def _signed_in(identity: Identity) -> None:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")


def _visible(ctx: Context, identity: Identity, job_id: int) -> dict:  # type: ignore[type-arg]
    _signed_in(identity)
    job = ctx.jobs.get(job_id)
    if not allowed(identity, Permission.SYSTEM_ADMIN) and job["created_by"] != identity.username:
        raise NotFound(f"job {job_id} not found", code="job_not_found", job=job_id)
    return job


@router.get("", response_model=list[JobOut], summary="Jobs, newest first (admins: all; others: their own)")
def list_jobs(
    kind: list[str] = Query([], max_length=50, description="only these kinds (repeatable)"),
    state: list[str] = Query([], max_length=5, description=f"only these states: {', '.join(STATES)}"),
    before: int | None = Query(None, ge=1, le=2**31 - 1, description="only jobs with a smaller id (paging)"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> list[JobOut]:
    _signed_in(identity)
    mine = None if allowed(identity, Permission.SYSTEM_ADMIN) else identity.username
    rows = ctx.jobs.list_jobs(kinds=kind, states=state, created_by=mine, before_id=before, limit=limit)
    return [JobOut(**r) for r in rows]


@router.get("/schedules", response_model=list[ScheduleOut], summary="Scheduled jobs and when they fire next")
def list_schedules(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[ScheduleOut]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    return [ScheduleOut(**r) for r in ctx.schedules.list_schedules()]


@router.get("/{job_id}", response_model=JobOut, summary="One job: state, progress, result")
def get_job(job_id: int = Path(ge=1, le=2**62), ctx: Context = CtxDep, identity: Identity = IdentityDep) -> JobOut:
    return JobOut(**_visible(ctx, identity, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a queued job, or ask a running one to stop")
def cancel_job(job_id: int = Path(ge=1, le=2**62), ctx: Context = CtxDep, identity: Identity = IdentityDep) -> JobOut:
    _visible(ctx, identity, job_id)
    if identity.scopes is not None and not any(s.unrestricted or s.scope == "upload" for s in identity.scopes):
        raise PermissionDenied("this token's scopes do not allow cancelling jobs", code="insufficient_scope")
    ctx.jobs.cancel(job_id)
    ctx.record_change(identity, "job:cancel", str(job_id))
    return JobOut(**ctx.jobs.get(job_id))
