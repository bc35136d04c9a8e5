"""CVE pages: advisories (search, filters), one advisory (scores, affected products, affected builds in readable
channels, curation history) and the curation form for ``cve:curate`` holders."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed
from condavault.errors import InvalidRequest
from condavault.vulns import api as vulns_api
from condavault.vulns.schemas import CurateRequest
from condavault.web.deps import MAX_ID
from condavault.web.ui.common import UIRoute, ctx_of, field, form_identity, page_identity, read_form, render, run_sync

router = APIRouter(route_class=UIRoute, include_in_schema=False)
PER_PAGE = 50
STATUSES = ("reported", "active", "mitigated", "cleared", "disputed")


@router.get("/cves")
def cve_list(
    request: Request,
    q: str = Query("", max_length=200),
    package: str = Query("", max_length=100),
    min_score: float | None = Query(None, ge=0.0, le=10.0),
    linked: bool = True,
    page: int = Query(1, ge=1, le=10000),
) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    rows = vulns_api.list_cves(
        q or None, package or None, None, min_score, linked, PER_PAGE + 1, (page - 1) * PER_PAGE, ctx, identity
    )
    return render(
        request,
        "cves.html",
        title="Vulnerabilities",
        rows=rows[:PER_PAGE],
        more=len(rows) > PER_PAGE,
        q=q,
        package=package,
        min_score=min_score,
        linked=linked,
        page=page,
    )


@router.get("/cves/{ident}")
def cve_page(request: Request, ident: str) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    if len(ident) > 200:
        raise InvalidRequest("advisory id too long")
    adv = vulns_api.show_cve(ident, ctx, identity)
    files = vulns_api.cve_files(ident, ctx, identity)
    history = vulns_api.cve_history(ident, ctx, identity)
    can_curate = allowed(identity, Permission.CVE_CURATE)
    return render(
        request,
        "cve.html",
        title=adv["id"],
        adv=adv,
        files=files,
        history=history[:100],
        can_curate=can_curate,
        statuses=STATUSES,
    )


@router.post("/cves/{ident}/curate")
async def curate(request: Request, ident: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    status = field(form, "status", max_length=20)
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_form")
    try:
        link_ids = [int(v) for v in form.get("link_id", [])[:1000]]
    except ValueError:
        raise InvalidRequest("link ids are numbers", code="invalid_form")
    if any(not 1 <= i <= MAX_ID for i in link_ids):
        raise InvalidRequest("no such link", code="invalid_form")
    package = field(form, "package", max_length=100).strip() or None
    body = CurateRequest(
        status=status,  # type: ignore[arg-type]
        reason=field(form, "reason", max_length=2000),
        link_ids=link_ids,
        package=package,
        versions=field(form, "versions", "*", max_length=200).strip() or "*",
    )
    await run_sync(vulns_api.curate, ident, body, ctx, identity)
    return RedirectResponse(f"/cves/{quote(ident, safe='')}", status_code=303)
