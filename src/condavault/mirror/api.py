"""REST routes under ``/api/mirrors``. Thin: parse, authorise, call one service, shape the result.

Managing a mirror needs ``mirror:manage`` and ``channel:write`` on its channel; reading one (list,
show, history, plan, explain) needs ``channel:read`` on its channel -- to anyone else it does not exist.
A server-side path (``file:`` or a local folder) as upstream needs ``system:admin``; URL upstreams and
proxies must pass the outbound URL policy (``condavault.outbound``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed, authorize
from condavault.context import Context
from condavault.mirror import services as svc
from condavault.mirror import tasks
from condavault.mirror.config import MirrorConfig, dump_yaml, load_yaml
from condavault.mirror.models import Mirror
from condavault.mirror.schemas import ExplainOut, ItemOut, MirrorOut, RunOut, YamlIn
from condavault.outbound.policy import PROXY_SCHEMES, UrlPolicy
from condavault.web.deps import MAX_ID, MAX_OFFSET, CtxDep, IdentityDep

router = APIRouter(prefix="/api/mirrors", tags=["mirrors"])


def _mirror_out(ctx: Context, s: Session, m: Mirror, *, detail: bool = False) -> MirrorOut:
    cfg = svc.load_config(m)
    last = svc.last_run(s, m, real=False)
    return MirrorOut(
        name=m.name,
        channel=svc.channel_name(s, m),
        mode=m.mode,
        cron=m.cron,
        upstream=svc.redacted(cfg)["upstream"],
        subdirs=cfg.subdirs,
        config=svc.redacted(cfg),
        created_at=m.created_at,
        updated_at=m.updated_at,
        created_by=m.created_by,
        running=bool(m.lease_holder and m.lease_until > time.time()),
        last_run=RunOut(**svc.run_dict(last)) if last else None,
        items=svc.item_summary(s, m) if detail else None,
    )


def _can_manage(ctx: Context, identity: Identity, channel: str) -> None:
    ref = ctx.channels.require(identity, channel, Permission.CHANNEL_WRITE)
    authorize(identity, Permission.MIRROR_MANAGE, ref)


def _manage(ctx: Context, identity: Identity, name: str) -> None:
    _can_manage(ctx, identity, _readable_channel(ctx, identity, name).name)


def _read(ctx: Context, identity: Identity, name: str) -> None:
    _readable_channel(ctx, identity, name)


def _readable_channel(ctx: Context, identity: Identity, name: str) -> ChannelRef:
    """The mirror's channel if the caller may read it. A mirror feeding a channel the caller may not
    read answers exactly like a mirror that does not exist (its channel's name is never echoed)."""
    with ctx.db.session() as s:
        channel = svc.channel_name(s, svc.get_mirror(s, name))
    ref = ctx.channels.lookup(channel)
    if ref is None or not allowed(identity, Permission.CHANNEL_READ, ref):
        raise svc.mirror_not_found(name)
    return ref


def _check_upstream(ctx: Context, identity: Identity, cfg: MirrorConfig) -> None:
    """Reading the server's own disk is for system administrators; URLs must pass the outbound policy."""
    if urlparse(cfg.upstream).scheme not in ("http", "https"):
        authorize(identity, Permission.SYSTEM_ADMIN)
    else:
        UrlPolicy.from_settings(ctx.settings).check_url(cfg.upstream)
    if cfg.proxy:
        UrlPolicy.from_settings(ctx.settings).check_url(cfg.proxy, what="proxy", schemes=PROXY_SCHEMES)


def _save(ctx: Context, identity: Identity, cfg: MirrorConfig, *, replace: bool) -> MirrorOut:
    if replace:
        with ctx.db.session() as s:
            exists = svc.find_mirror(s, cfg.name) is not None
        if exists:  # first the mirror replaced (hidden: 404, as if missing), then the channel named
            _manage(ctx, identity, cfg.name)
    _can_manage(ctx, identity, cfg.channel)
    _check_upstream(ctx, identity, cfg)

    def work(s: Session) -> MirrorOut:
        old = svc.find_mirror(s, cfg.name)
        if old is not None and replace:
            old_channel = svc.channel_name(s, old)
            if old_channel != cfg.channel:
                _can_manage(ctx, identity, old_channel)
        merged = svc.merge_secrets(cfg, svc.load_config(old) if old is not None else None)
        m, before = svc.save_mirror(s, merged, created_by=identity.username, replace=replace)
        tasks.save_schedule(ctx, s, m)
        ctx.record_change(
            identity,
            "mirror:update" if before is not None else "mirror:create",
            cfg.name,
            svc.redacted(before) if before is not None else None,
            svc.redacted(merged),
            session=s,
        )
        return _mirror_out(ctx, s, m)

    return ctx.db.run_write(work)


@router.get("", response_model=list[MirrorOut], summary="Mirrors whose channel the caller may read")
def list_mirrors(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[MirrorOut]:
    out = []
    with ctx.db.session() as s:
        for m in svc.list_mirrors(s):
            ref = ctx.channels.lookup(svc.channel_name(s, m))
            if ref is not None and allowed(identity, Permission.CHANNEL_READ, ref):
                out.append(_mirror_out(ctx, s, m))
    return out


@router.post("", response_model=MirrorOut, status_code=201, summary="Create a mirror")
def create_mirror(body: MirrorConfig, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> MirrorOut:
    return _save(ctx, identity, body, replace=False)


@router.post("/apply", response_model=MirrorOut, summary="Create or replace a mirror from its YAML")
def apply_yaml(body: YamlIn, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> MirrorOut:
    return _save(ctx, identity, load_yaml(body.yaml), replace=True)


@router.get("/{name}", response_model=MirrorOut, summary="One mirror, its last run and plan summary")
def show_mirror(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> MirrorOut:
    _read(ctx, identity, name)
    with ctx.db.session() as s:
        return _mirror_out(ctx, s, svc.get_mirror(s, name), detail=True)


@router.put("/{name}", response_model=MirrorOut, summary="Create or replace a mirror")
def put_mirror(name: str, body: MirrorConfig, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> MirrorOut:
    if body.name != name:
        from condavault.errors import InvalidRequest

        raise InvalidRequest(f"the body names mirror {body.name!r}, the URL {name!r}", code="name_mismatch")
    return _save(ctx, identity, body, replace=True)


@router.get("/{name}/export", response_class=PlainTextResponse, summary="The mirror's config as YAML")
def export_mirror(
    name: str,
    secrets: bool = Query(False, description="include upstream credentials (needs mirror:manage)"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> str:
    if secrets:
        _manage(ctx, identity, name)
    else:
        _read(ctx, identity, name)
    with ctx.db.session() as s:
        cfg = svc.load_config(svc.get_mirror(s, name))
    if not secrets:
        cfg = MirrorConfig.model_validate(svc.redacted(cfg))
    return dump_yaml(cfg)


@router.delete("/{name}", status_code=204, summary="Delete a mirror (its channel and files stay)")
def delete_mirror(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> None:
    _manage(ctx, identity, name)

    def work(s: Session) -> None:
        m = svc.get_mirror(s, name)
        before = svc.redacted(svc.load_config(m))
        svc.delete_mirror(s, name)
        ctx.schedules.drop(s, tasks.schedule_name(name))
        ctx.record_change(identity, "mirror:delete", name, before, None, session=s)

    ctx.db.run_write(work)


@router.post("/{name}/plan", response_model=RunOut, summary="Dry run: plan and store decisions, change nothing")
def plan_mirror(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> RunOut:
    _manage(ctx, identity, name)
    return RunOut(
        **tasks.start_run(
            ctx, name, trigger="api", dry_run=True, background=False, raise_invalid=True, created_by=identity.username
        )
    )


@router.post("/{name}/runs", response_model=RunOut, status_code=202, summary="Start a run now (409 if one is running)")
def start_run(
    name: str,
    full: bool = Query(False, description="re-plan even when upstream and config are unchanged"),
    wait: bool = Query(False, description="answer only when the run has finished"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> RunOut:
    _manage(ctx, identity, name)
    run = tasks.start_run(ctx, name, trigger="api", full=full, background=not wait, created_by=identity.username)
    ctx.record_change(identity, "mirror:run", name, None, {"run": run["id"]})
    return RunOut(**run)


@router.get("/{name}/runs", response_model=list[RunOut], summary="Run history, newest first")
def list_runs(
    name: str, limit: int = Query(50, ge=1, le=1000), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> list[RunOut]:
    _read(ctx, identity, name)
    with ctx.db.session() as s:
        return [RunOut(**svc.run_dict(r)) for r in svc.list_runs(s, svc.get_mirror(s, name), limit)]


@router.get("/{name}/runs/{run_id}", response_model=RunOut, summary="One run: status, progress, counts")
def get_run(
    name: str, run_id: int = Path(ge=1, le=MAX_ID), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> RunOut:
    _read(ctx, identity, name)
    with ctx.db.session() as s:
        return RunOut(**svc.run_dict(svc.get_run(s, svc.get_mirror(s, name), run_id)))


@router.post("/{name}/cancel", summary="Ask the running run to stop")
def cancel(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    _manage(ctx, identity, name)
    return {"cancelling": tasks.cancel(ctx, identity, name)}


@router.get("/{name}/explain", response_model=ExplainOut, summary="Why a file is (not) mirrored")
def explain(
    name: str,
    q: str = Query(..., description="filename, subdir/filename or package name"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> ExplainOut:
    _read(ctx, identity, name)
    with ctx.db.session() as s:
        rows = svc.explain(s, svc.get_mirror(s, name), q)
    if not rows:
        from condavault.errors import NotFound

        raise NotFound(
            f"{q!r} is not in the last plan of mirror {name!r} (not upstream, or no plan yet)",
            code="not_in_plan",
            mirror=name,
            query=q,
        )
    return ExplainOut(mirror=name, query=q, decisions=[ItemOut(**r) for r in rows])


@router.get("/{name}/items", response_model=list[ItemOut], summary="The stored plan, one decision per file")
def items(
    name: str,
    kept: bool | None = None,
    state: str | None = None,
    filter: str | None = Query(None, description="only decisions by this filter"),
    limit: int = Query(1000, ge=1, le=100000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> list[ItemOut]:
    _read(ctx, identity, name)
    with ctx.db.session() as s:
        rows = svc.list_items(
            s, svc.get_mirror(s, name), kept=kept, state=state, filter_=filter, limit=limit, offset=offset
        )
    return [ItemOut(**r) for r in rows]
