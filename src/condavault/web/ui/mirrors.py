"""Mirror pages: the list, one mirror (schedule, last runs, plan summary, the "why filtered" explorer), one
run with live progress (the page polls ``GET /api/mirrors/<name>/runs/<id>``), start and cancel buttons."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from condavault.errors import CondavaultError, NotFound
from condavault.mirror import api as mirror_api
from condavault.web.deps import MAX_ID
from condavault.web.ui.common import UIRoute, ctx_of, form_identity, page_identity, read_form, render, run_sync

router = APIRouter(route_class=UIRoute, include_in_schema=False)
DROPPED_SHOWN = 200


@router.get("/mirrors")
def mirror_list(request: Request) -> Response:
    identity = page_identity(request)
    mirrors = mirror_api.list_mirrors(ctx_of(request), identity)
    return render(request, "mirrors.html", title="Mirrors", mirrors=mirrors)


@router.get("/mirrors/{name}")
def mirror_page(
    request: Request,
    name: str,
    q: str = Query("", max_length=300, description="why-filtered explorer: filename, subdir/filename or name"),
    filter: str | None = Query(None, max_length=100, description="list the files this filter dropped"),
) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    m = mirror_api.show_mirror(name, ctx, identity)  # 404 for mirrors of channels the caller may not read
    runs = mirror_api.list_runs(name, 20, ctx, identity)
    try:
        mirror_api._manage(ctx, identity, name)
        can_manage = True
    except CondavaultError:
        can_manage = False
    explained = None
    explain_error = None
    if q.strip():
        try:
            explained = mirror_api.explain(name, q.strip(), ctx, identity).decisions
        except NotFound as exc:
            explain_error = exc.message
    dropped = mirror_api.items(name, False, None, filter, DROPPED_SHOWN, 0, ctx, identity) if filter else None
    return render(request, "mirror.html", title=f"Mirror {m.name}", m=m, runs=runs, can_manage=can_manage, q=q,
                  explained=explained, explain_error=explain_error, filter=filter, dropped=dropped,
                  dropped_max=DROPPED_SHOWN)


@router.post("/mirrors/{name}/run")
async def start_run(request: Request, name: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    full = form.get("full", [""])[0] == "1"
    run = await run_sync(lambda: mirror_api.start_run(name, full, False, ctx, identity))
    return RedirectResponse(f"/mirrors/{quote(name, safe='')}/runs/{run.id}", status_code=303)


@router.post("/mirrors/{name}/cancel")
async def cancel_run(request: Request, name: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    await run_sync(mirror_api.cancel, name, ctx, identity)
    return RedirectResponse(f"/mirrors/{quote(name, safe='')}", status_code=303)


@router.get("/mirrors/{name}/runs/{run_id}")
def run_page(request: Request, name: str, run_id: int = Path(ge=1, le=MAX_ID)) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    run = mirror_api.get_run(name, run_id, ctx, identity)
    try:
        mirror_api._manage(ctx, identity, name)
        can_manage = True
    except CondavaultError:
        can_manage = False
    return render(request, "run.html", title=f"Run {run.id} of {name}", name=name, run=run, can_manage=can_manage)
