"""Mirror pages: the list (with a create form), one mirror (schedule, last runs, plan summary, the "why
filtered" explorer, its configuration editable as YAML), one run with live progress (the page polls
``GET /api/mirrors/<name>/runs/<id>``), start and cancel buttons. Every form calls the API route function."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed
from condavault.channels.services import ChannelService
from condavault.errors import CondavaultError, InvalidRequest, NotFound
from condavault.mirror import api as mirror_api
from condavault.mirror.config import MirrorConfig, MirrorConfigError, load_yaml
from condavault.web.deps import MAX_ID
from condavault.web.ui.common import (
    UIRoute,
    ctx_of,
    field,
    form_identity,
    page_identity,
    read_form,
    render,
    run_sync,
)

router = APIRouter(route_class=UIRoute, include_in_schema=False)
DROPPED_SHOWN = 200
KNOWN_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64")


@router.get("/mirrors")
def mirror_list(request: Request) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    mirrors = mirror_api.list_mirrors(ctx, identity)
    # the create form: for callers who could create one (mirror:manage and channel:write on some channel)
    refs = [ChannelRef(c.id, c.name, c.privacy) for c in ChannelService(ctx).list_readable(identity)]
    channels = [
        r.name
        for r in refs
        if allowed(identity, Permission.MIRROR_MANAGE, r) and allowed(identity, Permission.CHANNEL_WRITE, r)
    ]
    return render(request, "mirrors.html", title="Mirrors", mirrors=mirrors, channels=channels, subdirs=KNOWN_SUBDIRS)


def _lines(form: dict[str, list[str]], name: str) -> list[str]:
    """A textarea of one entry per line (or comma separated), blanks dropped."""
    text = field(form, name, max_length=20000)
    out = [x.strip() for line in text.splitlines() for x in line.split(",") if x.strip()]
    if len(out) > 1000:
        raise InvalidRequest(f"{name}: at most 1000 entries", code="invalid_form")
    return out


def _check(form: dict[str, list[str]], name: str) -> bool:
    return field(form, name, max_length=10) in ("1", "on", "true")


def _config_from_form(form: dict[str, list[str]]) -> MirrorConfig:
    """The create form as a :class:`MirrorConfig` (validated like the API's body: a 400 naming the field)."""
    filters: dict[str, Any] = {}
    for key in ("only_specs", "exclude_specs", "include_specs", "include_licenses", "exclude_licenses"):
        if values := _lines(form, key):
            filters[key] = values
    for key in ("include_dependencies", "exclude_prereleases", "only_signed", "dedupe_conda_legacy"):
        if _check(form, key):
            filters[key] = True
    if keep := field(form, "keep_latest", max_length=6).strip():
        filters["keep_latest"] = int(keep) if keep.lstrip("-").isdigit() else keep
    if size := field(form, "max_size", max_length=30).strip():
        filters["max_size"] = size
    if score := field(form, "cve_score_threshold", max_length=10).strip():
        filters["cve_score_threshold"] = score
    data: dict[str, Any] = {
        "name": field(form, "name", max_length=100).strip(),
        "upstream": field(form, "upstream", max_length=2000).strip(),
        "channel": field(form, "channel", max_length=100).strip(),
        "subdirs": _lines(form, "subdirs") or (form.get("subdir") or []),
        "mode": field(form, "mode", "active", max_length=10),
        "on_remove": field(form, "on_remove", "remove", max_length=10),
        "filters": filters,
    }
    if cron := field(form, "cron", max_length=200).strip():
        data["cron"] = cron
    if token := field(form, "upstream_token", max_length=2000).strip():
        data["upstream_token"] = token
    try:
        return MirrorConfig.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise MirrorConfigError(f"invalid mirror: {msgs}"[:1000]) from None


@router.post("/mirrors")
async def create_mirror(request: Request) -> Response:
    """Create a mirror from the form: the service behind ``POST /api/mirrors`` (same permission checks:
    ``mirror:manage`` and ``channel:write`` on its channel, the outbound URL policy; audited)."""
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    cfg = _config_from_form(form)
    m = await run_sync(mirror_api.create_mirror, cfg, ctx, identity)
    return RedirectResponse(f"/mirrors/{quote(m.name, safe='')}", status_code=303)


@router.post("/mirrors/{name}/config")
async def edit_mirror(request: Request, name: str) -> Response:
    """Replace a mirror's configuration (its YAML, as ``condavault mirror export`` prints it; redacted
    secrets keep the stored ones): the service behind ``PUT /api/mirrors/<name>``."""
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    cfg = load_yaml(field(form, "yaml", max_length=60000))
    await run_sync(mirror_api.put_mirror, name, cfg, ctx, identity)
    return RedirectResponse(f"/mirrors/{quote(name, safe='')}", status_code=303)


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
    config = mirror_api.export_mirror(name, False, ctx, identity) if can_manage else None
    return render(
        request,
        "mirror.html",
        title=f"Mirror {m.name}",
        m=m,
        runs=runs,
        can_manage=can_manage,
        q=q,
        explained=explained,
        explain_error=explain_error,
        filter=filter,
        dropped=dropped,
        dropped_max=DROPPED_SHOWN,
        config=config,
    )


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
