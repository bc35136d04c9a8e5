"""Channel list, channel page (packages, subdirs, privacy, size, the mirrors feeding it) and the package page
at ``/channels/<channel>/packages/<name>``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from condavault.auth import admin_api
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed
from condavault.auth.schemas import GrantIn
from condavault.channels import api as channels_api
from condavault.channels.depends import COUNT_CAP
from condavault.channels.schemas import ChannelUpdate
from condavault.channels.services import ChannelService
from condavault.errors import NotFound
from condavault.mirror import api as mirror_api
from condavault.packages.specs import version_key
from condavault.vulns import reports
from condavault.web.ui import data
from condavault.web.ui.common import (
    UIRoute,
    base_url,
    ctx_of,
    field,
    form_identity,
    grant_form,
    page_identity,
    read_form,
    render,
    run_sync,
)

router = APIRouter(route_class=UIRoute, include_in_schema=False)
NAMES_PER_PAGE = 100
MAX_RECORDS = 5000  # builds shown on one package page
FILES_PER_PAGE = 500
DEPENDANTS_SHOWN = 50  # on the package page; all of them, paged, on .../dependants
DEPENDANTS_PER_PAGE = 200


@router.get("/channels")
def channel_list(request: Request) -> Response:
    identity = page_identity(request)
    channels = ChannelService(ctx_of(request)).list_readable(identity)
    return render(request, "channels.html", title="Channels", channels=channels)


@router.get("/channels/{channel}")
def channel_page(
    request: Request,
    channel: str,
    prefix: str = Query("", max_length=100),
    page: int = Query(1, ge=1, le=100000),
) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    ref = ctx.channels.for_read(identity, channel)
    c, stats = ChannelService(ctx).show(ref.name)
    with ctx.db.session() as s:
        names, total = data.package_names(
            s, ref.id, prefix=prefix, limit=NAMES_PER_PAGE, offset=(page - 1) * NAMES_PER_PAGE
        )
    mirrors = [m for m in mirror_api.list_mirrors(ctx, identity) if m.channel == ref.name]
    pages = max(1, -(-total // NAMES_PER_PAGE))
    can_manage = allowed(identity, Permission.CHANNEL_MANAGE, ref)
    grants = admin_api.channel_grants(ref.name, ctx, identity) if can_manage else []
    roles = admin_api.list_roles(ctx, identity) if can_manage else []
    return render(
        request,
        "channel.html",
        title=f"Channel {c.name}",
        c=c,
        stats=stats,
        names=names,
        total=total,
        mirrors=mirrors,
        prefix=prefix,
        page=page,
        pages=pages,
        repo=f"{base_url(request)}/api/repo/{c.name}",
        since=data.since_epoch_ms,
        can_manage=can_manage,
        grants=grants,
        roles=roles,
    )


@router.post("/channels/{channel}/settings")
async def channel_settings(request: Request, channel: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    body = ChannelUpdate(
        privacy=field(form, "privacy", max_length=20) or None, description=field(form, "description", max_length=5000)
    )
    await run_sync(channels_api.update_channel, channel, body, ctx, identity)
    return RedirectResponse(f"/channels/{quote(channel, safe='')}", status_code=303)


@router.post("/channels/{channel}/grants")
async def channel_grant(request: Request, channel: str) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    identity = await run_sync(form_identity, request, form)
    role, user, group, remove = grant_form(form)
    if remove:
        await run_sync(admin_api.channel_revoke, channel, role, user, group, ctx, identity)
    else:
        await run_sync(admin_api.channel_grant, channel, GrantIn(role=role, user=user, group=group), ctx, identity)
    return RedirectResponse(f"/channels/{quote(channel, safe='')}", status_code=303)


def _matrix(records: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Versions (newest first) x builds x subdirs."""
    subdirs = sorted({r.subdir for r in records})
    by_version: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        by_version[r.version][r.build][r.subdir] = r
    rows = []
    for version in sorted(by_version, key=version_key, reverse=True):
        builds = by_version[version]
        rows.append({"version": version, "builds": [{"build": b, "subdirs": builds[b]} for b in sorted(builds)]})
    return subdirs, rows


def _cve_summary(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for lk in links:
        a = out.setdefault(
            lk["advisory"],
            {
                "advisory": lk["advisory"],
                "aliases": lk["aliases"],
                "score": lk["score"],
                "statuses": set(),
                "versions": set(),
                "files": 0,
                "counts": False,
            },
        )
        a["statuses"].add(lk["status"])
        a["versions"].add(lk["version"])
        a["files"] += 1
        a["counts"] = a["counts"] or bool(lk["counts"])
    return sorted(out.values(), key=lambda a: (-(a["score"] or 0), a["advisory"]))


@router.get("/channels/{channel}/packages/{name}")
def package_page(
    request: Request,
    channel: str,
    name: str,
    file: str | None = Query(None, max_length=300, description="subdir/filename of the build to detail"),
    files_page: int = Query(1, ge=1, le=10000),
) -> Response:
    ctx = ctx_of(request)
    identity = page_identity(request)
    ref = ctx.channels.for_read(identity, channel)  # hidden channels: 404, as if missing
    records = ChannelService(ctx).list_files(ref.name, subdir=None, package=name, limit=MAX_RECORDS, offset=0)
    if not records:
        raise NotFound(f"no package {name!r} in channel {channel!r}", code="package_not_found")
    newest = max(records, key=lambda r: (version_key(r.version), r.build_number, r.timestamp or 0))
    selected = next((r for r in records if f"{r.subdir}/{r.filename}" == file), None) if file else newest
    if selected is None:
        raise NotFound(f"{file!r} is not a build of {name!r} in channel {channel!r}", code="file_not_found")
    subdirs, matrix = _matrix(records)
    files = ctx.domains.search.files(
        ref.id, selected.id, offset=(files_page - 1) * FILES_PER_PAGE, limit=FILES_PER_PAGE + 1
    )
    more_files = len(files) > FILES_PER_PAGE
    rec = data.record_json(selected)
    ctx.domains.audit.flush()  # downloads still queued in this process count too (before the read begins)
    with ctx.db.session() as s:
        links = reports.link_rows(s, [ref.id], package=name)
        downloads = data.downloads_per_day(s, ref.name, name)
        checks = data.build_checks(s, ref.name, selected)
    dependants, dependants_more = ChannelService(ctx).dependants(
        identity, ref.name, name, limit=DEPENDANTS_SHOWN, count=False
    )
    about = data.about(selected)
    url = f"{base_url(request)}/api/repo/{ref.name}"
    install = {
        "conda": f"conda install -c {url} {name}",
        "pixi": f"pixi workspace channel add {url}\npixi add {name}",
    }
    return render(
        request,
        "package.html",
        title=f"{name} · {ref.name}",
        channel=ref,
        name=name,
        records=records,
        subdirs=subdirs,
        matrix=matrix,
        selected=selected,
        rec=rec,
        about=about,
        files=files[:FILES_PER_PAGE],
        more_files=more_files,
        files_page=files_page,
        cves=_cve_summary(links),
        links=links,
        chart=data.chart(downloads),
        install=install,
        since=data.since_epoch_ms,
        dep_name=data.dep_name,
        truncated=len(records) >= MAX_RECORDS,
        dependants=dependants,
        dependants_more=dependants_more > len(dependants),
        checks=checks,
    )


@router.get("/channels/{channel}/packages/{name}/dependants")
def dependants_page(
    request: Request, channel: str, name: str, part: bool = False, page: int = Query(1, ge=1, le=100000)
) -> Response:
    """Packages in channels the caller may read that depend on this one, paged (``part``: only the list,
    as earlier versions of the package page loaded it)."""
    ctx = ctx_of(request)
    identity = page_identity(request)
    found, total = ChannelService(ctx).dependants(
        identity, channel, name, limit=DEPENDANTS_PER_PAGE, offset=(page - 1) * DEPENDANTS_PER_PAGE
    )
    ref = ctx.channels.for_read(identity, channel)
    pages = max(1, -(-min(total, COUNT_CAP) // DEPENDANTS_PER_PAGE))
    if total > COUNT_CAP:  # counted up to the cap: one page more while there are more
        _, more = ChannelService(ctx).dependants(
            identity, channel, name, limit=DEPENDANTS_PER_PAGE, offset=page * DEPENDANTS_PER_PAGE, count=False
        )
        pages = max(pages, page + (1 if more > page * DEPENDANTS_PER_PAGE else 0))
    return render(
        request,
        "_dependants.html" if part else "dependants.html",
        title=f"Dependants of {name}",
        channel=ref,
        name=name,
        dependants=found,
        dependants_total=total,
        capped=total > COUNT_CAP,
        page=page,
        pages=pages,
    )
