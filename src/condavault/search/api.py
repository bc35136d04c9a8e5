"""``/api/search``: one search over every channel the caller may read. Thin: parse, call the service.

Anonymous callers search public channels; results, totals, facets and suggestions never include a
channel the caller may not read. ``POST /api/search/reindex`` (``system:admin``) queues the rebuild job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.context import Context
from condavault.search.plugin import REINDEX_KIND
from condavault.search.query import MAX_QUERY
from condavault.search.service import MAX_PAGE, MAX_PER_PAGE, SearchQuery, SearchService
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api/search", tags=["search"])


def service(ctx: Context) -> SearchService:
    return ctx.domains.search


@router.get("", summary="Search packages (free text, MatchSpec, path:, sha256:, cve:, pkg:, license:, has:)")
def search(
    q: str = Query("", max_length=MAX_QUERY, description="the query; see docs/search.md"),
    channel: str | None = Query(None, min_length=1, max_length=100, description="only this channel"),
    subdir: str | None = Query(None, min_length=1, max_length=40, description="only packages with files here"),
    license: str | None = Query(None, min_length=1, max_length=200, description="only this license (* wildcards)"),
    score: str | None = Query(
        None,
        pattern="^(critical|high|medium|low|none)$",
        description="only packages whose worst CVE score is in this band",
    ),
    sort: str = Query("relevance", pattern="^(relevance|name|newest)$"),
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(20, ge=1, le=MAX_PER_PAGE),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    query = SearchQuery(
        q=q, channel=channel, subdir=subdir, license=license, score=score, sort=sort, page=page, per_page=per_page
    )
    return service(ctx).search(identity, query)


@router.get("/provides", summary="Which packages provide this file (an exact path inside the package)")
def provides(
    path: str = Query(..., min_length=1, max_length=1024, description="e.g. lib/libz.so.1"),
    page: int = Query(1, ge=1, le=MAX_PAGE),
    per_page: int = Query(50, ge=1, le=MAX_PER_PAGE),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    return service(ctx).provides(identity, path, page, per_page)


@router.post("/reindex", status_code=202, summary="Rebuild the search tables (a job; system:admin)")
def reindex(
    files: bool = Query(True, description="also read the file lists of stored packages that have none"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    job_id = ctx.jobs.enqueue(REINDEX_KIND, {"files": files}, dedupe_key=REINDEX_KIND, created_by=identity.username)
    ctx.record_change(identity, "search:reindex", "search")
    return {"job": job_id}
