"""REST routes of the vulnerability database. Thin: parse, authorise, call services, shape.

Reading CVE data of records needs read access to their channel; every list is filtered to the
channels the caller may read. Curation needs ``cve:curate``; syncing needs ``system:admin``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed, authorize
from condavault.channels.models import Channel, Record
from condavault.context import Context
from condavault.errors import CondavaultError, InvalidRequest, NotFound
from condavault.vulns import catalog, curation, envcheck, reports, store
from condavault.vulns.models import VulnLinkRow
from condavault.vulns.schemas import BulkCurateRequest, CheckEnvRequest, CurateRequest, SyncRequest
from condavault.vulns.tasks import VulnRuntime
from condavault.web.deps import MAX_OFFSET, CtxDep, IdentityDep
from condavault.web.limits import body_spec

router = APIRouter(prefix="/api", tags=["vulnerabilities"])


def runtime(ctx: Context) -> VulnRuntime:
    return ctx.domains.vulns


def readable(ctx: Context, identity: Identity) -> dict[int, str]:
    """id -> name of every channel the caller may read."""
    with ctx.db.session() as s:
        rows = s.execute(select(Channel.id, Channel.name, Channel.privacy)).all()
    return {cid: name for cid, name, p in rows if allowed(identity, Permission.CHANNEL_READ, ChannelRef(cid, name, p))}


def _advisory_or_404(s: Any, ident: str) -> Any:
    row = store.find_advisory(s, ident)
    if row is None:
        raise NotFound(
            f"advisory {ident!r} is not in the vulnerability database", code="advisory_not_found", advisory=ident
        )
    return row


# -- advisories ---------------------------------------------------------------------------------------


@router.get("/cves", summary="List or search advisories (counts of affected files in readable channels)")
def list_cves(
    q: str | None = Query(None, description="id, alias, summary text or conda package name"),
    package: str | None = Query(None, description="only advisories linked to builds of this package"),
    channel: str | None = Query(None, description="only advisories linked to files of this channel"),
    min_score: float | None = Query(None, ge=0.0, le=10.0),
    linked: bool = Query(False, description="only advisories linked to at least one readable file"),
    limit: int = Query(100, ge=1, le=10000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> list[dict[str, Any]]:
    channel_id = ctx.channels.for_read(identity, channel).id if channel else None
    ids = list(readable(ctx, identity))
    with ctx.db.session() as s:
        return reports.list_advisories(
            s,
            ids,
            q=q,
            package=package,
            channel_id=channel_id,
            min_score=min_score,
            linked=linked,
            limit=limit,
            offset=offset,
        )


@router.get("/cves/report", summary="Every link in readable channels (JSON or CSV)")
def global_report(
    format: str = Query("json", pattern="^(json|csv)$"),
    package: str | None = None,
    risk: bool = Query(True, description="bring the dependency-tree risk up to date first (false: as cached)"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    ids = readable(ctx, identity)
    return _report(ctx, list(ids), format, package, "cves-report", risk)


@router.get("/cves/history", summary="Curation history (all advisories)")
def all_history(
    limit: int = Query(500, ge=1, le=10000), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> list[dict[str, Any]]:
    ids = readable(ctx, identity)
    with ctx.db.session() as s:
        return reports.history(s, list(ids), None, limit)


@router.post(
    "/cves/sync",
    summary="Fetch sources and match (JSON body, or a zip/JSON feed as the raw body)",
    openapi_extra=body_spec("upload", "system:admin", json_kind="default"),
)
async def sync(
    request: Request,
    wait: bool = True,
    name: str = Query(
        "upload",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="name of an uploaded source (kept as source 'upload:<name>'; a later upload of the same name "
        "replaces its versions of the records it carries)",
    ),
) -> Any:
    from condavault.auth.deps import get_identity

    ctx: Context = request.app.state.ctx
    identity = await anyio.to_thread.run_sync(get_identity, request)
    authorize(identity, Permission.SYSTEM_ADMIN)
    rt = runtime(ctx)
    ctype = request.headers.get("content-type", "")
    upload: str | None = None
    names: dict[str, str] = {}
    if ctype.startswith("application/json") or not ctype:
        body = await request.body()
        try:
            req = SyncRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise InvalidRequest(f"invalid sync request: {exc.errors()[0].get('msg')}", code="invalid_request") from exc
        sources, wait = req.sources, req.wait and wait
    else:
        folder = ctx.settings.data_dir / "vulns" / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".zip" if ("zip" in ctype or "octet-stream" in ctype) else ".json"
        fd, upload = tempfile.mkstemp(dir=folder, suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    await anyio.to_thread.run_sync(fh.write, chunk)
        except BaseException:  # a client that went away or was refused leaves nothing behind
            os.unlink(upload)
            raise
        sources = [upload]
        names = {upload: f"upload:{name}"}
    if not sources and not ctx.settings.vulns_sources:
        raise InvalidRequest("no sources given and none configured (vulns_sources)", code="no_vuln_sources")
    from pathlib import Path

    cleanup = Path(upload) if upload else None
    return await anyio.to_thread.run_sync(lambda: _sync_job(ctx, rt, identity, sources, cleanup, wait, names))


def _sync_job(
    ctx: Context,
    rt: VulnRuntime,
    identity: Identity,
    sources: list[str],
    cleanup: Any,
    wait: bool,
    names: dict[str, str],
) -> Any:
    """Enqueue the sync job; with ``wait``, run it here (or wait for the worker that took it). An uploaded
    feed is spooled on this machine's disk: its job always runs in this process (in the background without
    ``wait``), never on a worker of another machine that could not read the file."""
    here = wait or cleanup is not None
    job_id = rt.start_job(sources or None, cleanup=cleanup, created_by=identity.username, claim=here, names=names)
    if not wait:
        if here:
            threading.Thread(
                target=ctx.worker.run_claimed, args=(job_id,), name=f"condavault-cve-sync-{job_id}", daemon=True
            ).start()
        job = rt.job(str(job_id))
        ctx.record_change(identity, "cve:sync", ",".join(job["sources"]), None, {"job": job_id})
        return JSONResponse(job, status_code=202)
    ran = ctx.worker.run_claimed(job_id)
    if ran.error is not None:
        raise ran.error
    done = ctx.jobs.wait(job_id, timeout=3600)
    if done["state"] != "succeeded":
        raise CondavaultError(
            f"vulnerability sync job {job_id} {done['state']}: {done['error']}", code="vuln_sync_failed"
        )
    report = done["result"] or {}
    ctx.record_change(identity, "cve:sync", ",".join(sources) or "configured", None, report)
    return report


@router.get("/cves/sources", summary="Synced sources: records per feed, name mapping entries, last outcome")
def list_sources(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[dict[str, Any]]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.session() as s:
        return catalog.sources_summary(s)


@router.delete("/cves/sources/{source_id}", summary="Forget a source: its records and name entries, then re-merge")
def remove_source(
    source_id: int = PathParam(..., ge=1, le=2**31 - 1), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    out = runtime(ctx).remove_source(source_id)
    ctx.record_change(identity, "cve:source-remove", out["location"], None, out)
    return out


@router.get("/cves/sync/jobs/{job_id}", summary="Progress of a sync started with wait=false")
def sync_job(job_id: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    return runtime(ctx).job(job_id)


@router.post("/cves/sweep", summary="Match records that were never matched (imports, mirror inserts) now")
def sweep(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, int]:
    authorize(identity, Permission.SYSTEM_ADMIN)
    return {"records": runtime(ctx).sweep(wait=True)}


@router.post("/cves/curate/bulk", summary="Several curations in one transaction")
def curate_bulk(body: BulkCurateRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.CVE_CURATE)
    ids = readable(ctx, identity)
    results: list[dict[str, Any]] = []
    audits: list[tuple[str, str, Any, Any]] = []

    def work(s: Any) -> None:
        for item in body.items:
            results.append(_curate(s, ctx, identity, ids, item.advisory, item, audits))

    ctx.db.run_write(work)
    _finish(ctx, identity, audits)
    return {"results": results, "changed": sum(len(r["changes"]) for r in results)}


@router.get("/cves/{ident}", summary="One advisory: aliases, scores, affected products and files")
def show_cve(ident: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    ids = readable(ctx, identity)
    admin = allowed(identity, Permission.SYSTEM_ADMIN)
    with ctx.db.session() as s:
        return reports.advisory_detail(s, _advisory_or_404(s, ident), list(ids), with_locations=admin)


@router.get("/cves/{ident}/files", summary="Files (in readable channels) linked to an advisory")
def cve_files(ident: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[dict[str, Any]]:
    ids = readable(ctx, identity)
    with ctx.db.session() as s:
        return reports.link_rows(s, list(ids), advisory_pk=_advisory_or_404(s, ident).id)


@router.get("/cves/{ident}/history", summary="Curation history of an advisory")
def cve_history(ident: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[dict[str, Any]]:
    ids = readable(ctx, identity)
    with ctx.db.session() as s:
        return reports.history(s, list(ids), _advisory_or_404(s, ident).advisory_id)


@router.post("/cves/{ident}/curate", summary="Set a status per link/file, or per package x version range")
def curate(ident: str, body: CurateRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    authorize(identity, Permission.CVE_CURATE)
    ids = readable(ctx, identity)
    audits: list[tuple[str, str, Any, Any]] = []
    out = ctx.db.run_write(lambda s: _curate(s, ctx, identity, ids, ident, body, audits))
    _finish(ctx, identity, audits)
    return out


def _curate(
    s: Any,
    ctx: Context,
    identity: Identity,
    ids: dict[int, str],
    ident: str,
    body: CurateRequest,
    audits: list[tuple[str, str, Any, Any]],
) -> dict[str, Any]:
    adv = _advisory_or_404(s, ident)
    changes: list[dict[str, Any]] = []
    rule_out = None
    links = []
    if body.link_ids:
        links = list(
            s.scalars(select(VulnLinkRow).where(VulnLinkRow.id.in_(body.link_ids), VulnLinkRow.advisory_pk == adv.id))
        )
        found = {lk.id for lk in links}
        for lk in links:
            cid = s.scalar(select(Record.channel_id).where(Record.id == lk.record_id))
            if cid not in ids:
                found.discard(lk.id)
        missing = sorted(set(body.link_ids) - found)
        if missing:
            raise NotFound(f"links {missing} of {adv.advisory_id} not found", code="link_not_found")
        links = [lk for lk in links if lk.id in found]
    if body.files:
        for f in body.files:
            ctx.channels.for_read(identity, f.channel)
        links += curation.find_links(s, adv, [(f.channel, f.subdir, f.filename) for f in body.files])
    if links:
        changes += curation.curate_links(s, links, body.status, body.reason, identity.username)
        for c in changes:
            audits.append(
                (
                    "cve:curate",
                    f"{c['advisory']}:{c['file']}",
                    {"status": c["before"]},
                    {"status": c["after"], "reason": body.reason},
                )
            )
    if body.package:
        rule, rule_changes = curation.curate_range(
            s, adv, body.package, body.versions, body.status, body.reason, identity.username
        )
        rule_out = {"id": rule.id, "package": rule.package, "versions": rule.versions, "status": rule.status}
        audits.append(
            (
                "cve:curate-range",
                f"{adv.advisory_id}:{rule.package} {rule.versions}",
                None,
                {**rule_out, "reason": body.reason, "links": len(rule_changes)},
            )
        )
        changes += [c for c in rule_changes if c.pop("channel_id") in ids]
    if not links and not body.package:
        raise InvalidRequest("say what to curate: link_ids, files or package (+ versions)", code="nothing_to_curate")
    return {"advisory": adv.advisory_id, "status": body.status, "rule": rule_out, "changes": changes}


def _finish(ctx: Context, identity: Identity, audits: list[tuple[str, str, Any, Any]]) -> None:
    for action, target, before, after in audits:
        ctx.record_change(identity, action, target, before, after)
    runtime(ctx).provider.invalidate()


# -- channel views --------------------------------------------------------------------------------


def _ensure_risk(ctx: Context, channel_ids: list[int]) -> None:
    """Recompute the dependency-tree risk of channels whose cache is stale (write lock only then)."""
    with ctx.db.session() as s:
        stale = [cid for cid in channel_ids if not reports.risk_is_fresh(s, cid)]
        for cid in stale:  # solve outside the write transaction (uploads go on meanwhile)
            reports.presolve_channel_risk(s, cid)
    if stale:
        with ctx.db.write_session() as s:
            for cid in stale:
                reports.ensure_channel_risk(s, cid, runtime(ctx).mapping())


def _report(
    ctx: Context, channel_ids: list[int], fmt: str, package: str | None, name: str, with_risk: bool = True
) -> Response:
    if with_risk:
        _ensure_risk(ctx, channel_ids)
    with ctx.db.session() as s:
        rows = reports.link_rows(s, channel_ids, package=package)
    if fmt == "csv":
        return PlainTextResponse(
            reports.to_csv(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return JSONResponse(rows)


@router.get("/channels/{name}/cves", summary="CVE report of a channel (JSON or CSV)")
def channel_report(
    name: str,
    format: str = Query("json", pattern="^(json|csv)$"),
    package: str | None = None,
    risk: bool = Query(True, description="bring the dependency-tree risk up to date first (false: as cached)"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    ref = ctx.channels.for_read(identity, name)
    return _report(ctx, [ref.id], format, package, f"{name}-cves", risk)


def _record(ctx: Context, identity: Identity, name: str, subdir: str, filename: str) -> tuple[ChannelRef, int]:
    ref = ctx.channels.for_read(identity, name)
    with ctx.db.session() as s:
        rid = s.scalar(
            select(Record.id).where(Record.channel_id == ref.id, Record.subdir == subdir, Record.filename == filename)
        )
    if rid is None:
        raise NotFound(
            f"{subdir}/{filename} not found in channel {name!r}", code="file_not_found", channel=name, filename=filename
        )
    return ref, rid


@router.get("/channels/{name}/files/{subdir}/{filename}/cves", summary="Advisories and dependency risk of a file")
def file_cves(
    name: str, subdir: str, filename: str, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    ref, rid = _record(ctx, identity, name, subdir, filename)
    _ensure_risk(ctx, [ref.id])
    from condavault.vulns.models import VulnRecordState

    with ctx.db.session() as s:
        links = reports.link_rows(s, [ref.id], record_ids=[rid])
        state = s.get(VulnRecordState, rid)
        own = max((lk["score"] for lk in links if lk["counts"] and lk["score"] is not None), default=None)
        return {
            "channel": name,
            "subdir": subdir,
            "filename": filename,
            "advisories": links,
            "own_score": own,
            "risk": state.risk if state else None,
            "risk_via": state.risk_via if state else None,
        }


@router.get("/channels/{name}/files/{subdir}/{filename}/sbom", summary="CycloneDX 1.5 SBOM of a package file")
def file_sbom(
    name: str, subdir: str, filename: str, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> JSONResponse:
    ref, rid = _record(ctx, identity, name, subdir, filename)
    with ctx.db.session() as s:
        rec = s.get(Record, rid)
        assert rec is not None
        bom = reports.package_sbom(s, rec, name, [ref.id])
    return JSONResponse(bom, media_type="application/vnd.cyclonedx+json")


# -- environment check ------------------------------------------------------------------------------


@router.post(
    "/check-env",
    summary="Solve an environment from channels of this server and report its advisories",
    openapi_extra=body_spec("default", anonymous=True),  # lock files of public-channel users
)
def check_env(
    body: CheckEnvRequest, request: Request, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> JSONResponse:
    parsed = envcheck.parse(body.content, body.kind)
    names = body.channels or parsed.channels
    refs: list[ChannelRef] = []
    for n in dict.fromkeys(names):
        if parsed.specs:
            refs.append(ctx.channels.for_read(identity, n))
        else:  # lock files name upstream channels; use those that exist here and may be read
            ref = ctx.channels.lookup(n)
            if ref is not None and allowed(identity, Permission.CHANNEL_READ, ref):
                refs.append(ref)
    platform = body.platform
    if not parsed.specs and parsed.locked and body.platform == "linux-64":
        platform = parsed.locked[0].get("subdir") or platform
    base = ctx.settings.public_url or str(request.base_url)
    threshold = body.threshold if body.threshold is not None else ctx.settings.vulns_policy_threshold
    rt = runtime(ctx)
    ids = list(readable(ctx, identity))
    with ctx.db.session() as s:
        result = envcheck.check(
            s,
            parsed,
            refs,
            platform=platform,
            base_url=base,
            readable=ids,
            vuln_links=rt.provider.vuln_links,
            threshold=threshold,
        )
        if body.format == "cyclonedx":
            from condavault.vulns import sbom

            refs_of = {(p["subdir"], p["filename"]): sbom.component(p)["bom-ref"] for p in result["packages"]}
            pairs = [(refs_of[(p["subdir"], p["filename"])], a) for p in result["packages"] for a in p["advisories"]]
            advisories = reports.advisories_by_id(s, [a["advisory"] for _, a in pairs])
            bom = sbom.document(result["packages"], pairs, advisories, name="check-env")
            return JSONResponse(bom, media_type="application/vnd.cyclonedx+json")
    return JSONResponse(result)
