"""Home, search results (facets, paging, "did you mean") and "which package provides this file"."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from condavault.channels.services import ChannelService
from condavault.errors import InvalidRequest
from condavault.search.service import SearchQuery, SearchService
from condavault.web.ui.common import UIRoute, ctx_of, page_identity, render

router = APIRouter(route_class=UIRoute, include_in_schema=False)
PER_PAGE = 20
MAX_PAGE = 500


def _search_service(request: Request) -> SearchService:
    return ctx_of(request).domains.search


@router.get("/")
def home(request: Request) -> Response:
    identity = page_identity(request)
    channels = ChannelService(ctx_of(request)).list_readable(identity)
    return render(request, "home.html", title="Home", channels=channels[:12], channel_count=len(channels))


@router.get("/search")
def search(
    request: Request,
    q: str = Query("", max_length=500),
    channel: str | None = Query(None, max_length=100),
    subdir: str | None = Query(None, max_length=32),
    license: str | None = Query(None, max_length=200),
    score: str | None = Query(None, pattern="^(critical|high|medium|low|none)?$"),
    sort: str = Query("relevance", pattern="^(relevance|name|newest)$"),
    page: int = Query(1, ge=1, le=MAX_PAGE),
) -> Response:
    identity = page_identity(request)
    params = {"q": q, "channel": channel, "subdir": subdir, "license": license, "score": score, "sort": sort}
    if not q.strip():
        return render(request, "search.html", title="Search", params=params, result=None)
    try:
        query = SearchQuery(
            q=q,
            channel=channel or None,
            subdir=subdir or None,
            license=license or None,
            score=score or None,
            sort=sort,
            page=page,
            per_page=PER_PAGE,
        )
        result = _search_service(request).search(identity, query)
    except InvalidRequest as exc:  # a query that does not parse: the form again, saying why
        return render(request, "search.html", status=400, title="Search", params=params, result=None, error=exc.message)
    pages = max(1, -(-int(result.get("total", 0)) // PER_PAGE))
    return render(
        request,
        "search.html",
        title=f"Search: {q}",
        params=params,
        result=result,
        page=page,
        pages=min(pages, MAX_PAGE),
    )


@router.get("/provides")
def provides(
    request: Request,
    path: str = Query("", max_length=1000),
    page: int = Query(1, ge=1, le=MAX_PAGE),
) -> Response:
    identity = page_identity(request)
    result = _search_service(request).provides(identity, path, page=page) if path.strip() else None
    pages = 1
    if result:
        pages = max(1, -(-int(result.get("total", 0)) // int(result.get("per_page") or PER_PAGE)))
    return render(
        request,
        "provides.html",
        title="Which package provides a file",
        path=path,
        result=result,
        page=page,
        pages=min(pages, MAX_PAGE),
    )
