"""REST routes for channels and their files. Thin: parse, authorise, call one service, shape."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed, authorize
from condavault.channels import records as rec_svc
from condavault.channels import services as svc
from condavault.channels.schemas import (
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    CopyRequest,
    FileOut,
    FilesRequest,
    UploadOut,
)
from condavault.context import Context
from condavault.errors import InvalidRequest
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.indexing.patches import PatchSet
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.ingest import Received
from condavault.web.deps import MAX_OFFSET, CtxDep, IdentityDep
from condavault.web.limits import body_spec

router = APIRouter(prefix="/api/channels", tags=["channels"])


def _audit(ctx: Context, identity: Identity, action: str, target: str, before: Any = None, after: Any = None) -> None:
    ctx.record_change(identity, action, target, before, after)


@router.get("", response_model=list[ChannelOut], summary="Channels the caller may read")
def list_channels(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[ChannelOut]:
    with ctx.db.session() as s:
        out = []
        for c in svc.list_channels(s):
            ref = ctx.channels.lookup(c.name)
            if ref is not None and allowed(identity, Permission.CHANNEL_READ, ref):
                out.append(ChannelOut.of(c))
        return out


@router.post("", response_model=ChannelOut, status_code=201, summary="Create a channel")
def create_channel(body: ChannelCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> ChannelOut:
    authorize(identity, Permission.CHANNEL_CREATE)
    with ctx.db.write_session() as s:
        c = svc.create_channel(
            s, body.name, privacy=body.privacy, description=body.description, created_by=identity.username
        )
        ctx.on_channel_created(s, c, identity)
        out = ChannelOut.of(c)
        cid = c.id
    ctx.channels.invalidate(body.name)
    _audit(ctx, identity, "channel:create", body.name, None, body.model_dump())
    ctx.indexer.index_subdir(cid, "noarch")  # noarch/repodata.json exists as soon as the channel does
    return out


@router.get("/{name}", response_model=ChannelOut, summary="One channel with per-subdir counts")
def show_channel(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> ChannelOut:
    ctx.channels.for_read(identity, name)
    with ctx.db.session() as s:
        c = svc.get_channel(s, name)
        return ChannelOut.of(c, svc.channel_stats(s, c.id))


@router.patch("/{name}", response_model=ChannelOut, summary="Change privacy or description")
def update_channel(
    name: str, body: ChannelUpdate, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> ChannelOut:
    ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    with ctx.db.write_session() as s:
        before = ChannelOut.of(svc.get_channel(s, name)).model_dump(mode="json")
        c = svc.update_channel(s, name, privacy=body.privacy, description=body.description)
        out = ChannelOut.of(c)
    ctx.channels.invalidate(name)
    ctx.lookup.invalidate()
    _audit(ctx, identity, "channel:update", name, before, out.model_dump(mode="json"))
    return out


@router.delete("/{name}", status_code=204, summary="Delete a channel and its records")
def delete_channel(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> None:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    with ctx.db.write_session() as s:
        svc.delete_channel(s, name)
    ctx.channels.invalidate(name)
    ctx.lookup.invalidate(ref.id)
    ctx.indexer.forget(ref.id)
    _audit(ctx, identity, "channel:delete", name)


@router.get("/{name}/files", response_model=list[FileOut], summary="Files in a channel")
def list_files(
    name: str,
    subdir: str | None = None,
    package: str | None = Query(None, description="package name"),
    full: bool = False,
    limit: int = Query(1000, ge=1, le=100000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> list[FileOut]:
    ctx.channels.for_read(identity, name)
    with ctx.db.session() as s:
        c = svc.get_channel(s, name)
        rows = rec_svc.list_records(s, c, subdir=subdir, name=package, limit=limit, offset=offset)
        return [FileOut.of(r, full) for r in rows]


@router.post(
    "/{name}/files",
    response_model=UploadOut,
    summary="Upload one package (raw body, or multipart field 'file')",
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **body_spec("upload", Permission.CHANNEL_WRITE),
    },
)
async def upload(
    request: Request,
    name: str,
    filename: str | None = Query(None, description="package filename; required for raw bodies"),
    subdir: str | None = Query(None, description="expected subdir (rejected if the package says otherwise)"),
    force: bool = False,
    skip_existing: bool = False,
    wait: bool = Query(True, description="return only once the index includes the file"),
    sha256: str | None = Query(None, description="expected sha256 of the bytes", pattern="^[0-9a-fA-F]{64}$"),
) -> UploadOut:
    ctx: Context = request.app.state.ctx
    from condavault.auth.deps import get_identity

    identity = get_identity(request)
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    if subdir is not None:  # everything that can be refused without the body is refused before reading it
        check_subdir(subdir)
    ctype = request.headers.get("content-type", "")
    multipart = ctype.startswith("multipart/form-data")
    if not multipart:
        if not filename:
            raise InvalidRequest("the 'filename' query parameter is required", code="missing_filename")
        parse_filename(filename)
        received = await ctx.ingestor.aspool(request.stream())
    else:
        form = await request.form(max_files=1, max_fields=10)
        try:
            upload_file = form.get("file")
            if upload_file is None or isinstance(upload_file, str):
                raise InvalidRequest("multipart upload needs a 'file' field", code="missing_file")
            filename = filename or upload_file.filename or ""
            parse_filename(filename)
            received = await anyio.to_thread.run_sync(
                ctx.ingestor.spool, iter(lambda: upload_file.file.read(1024 * 1024), b"")
            )
        finally:
            await form.close()
    try:
        return await _store_upload(ctx, identity, name, received, filename or "", subdir, force, skip_existing,
                                   wait, sha256)
    finally:
        received.discard()  # consumed by a successful ingest; removed on every error path


async def _store_upload(
    ctx: Context, identity: Identity, name: str, received: Received, filename: str, subdir: str | None,
    force: bool, skip_existing: bool, wait: bool, sha256: str | None,
) -> UploadOut:
    if skip_existing:
        existing = await anyio.to_thread.run_sync(_existing, ctx, name, filename)
        if existing is not None:
            return UploadOut(
                channel=name,
                subdir=existing[0],
                filename=filename,
                sha256=existing[1] or "",
                md5=existing[2] or "",
                size=existing[3] or 0,
                status="skipped",
                indexed=True,
            )

    def work() -> UploadOut:
        result = ctx.ingestor.ingest(
            name,
            received,
            filename,
            expected_subdir=subdir,
            force=force,
            actor=identity.username,
            expected_sha256=sha256.lower() if sha256 else None,
        )
        indexed = True
        if wait and result.status != "unchanged":
            ref = ctx.channels.lookup(name)
            assert ref is not None
            indexed = ctx.indexer.wait_for(ref.id, result.subdir, result.change_seq, timeout=120)
        ctx.on_ingested(result, identity)
        return UploadOut(**result.to_dict(), indexed=indexed)

    out = await anyio.to_thread.run_sync(work)
    from condavault import metrics

    metrics.UPLOADS.labels(out.status).inc()
    return out


def _existing(
    ctx: Context, channel: str, filename: str | None
) -> tuple[str, str | None, str | None, int | None] | None:
    from condavault.channels.models import Record

    with ctx.db.session() as s:
        c = svc.get_channel(s, channel)
        row = s.execute(
            select(Record.subdir, Record.sha256, Record.md5, Record.size).where(
                Record.channel_id == c.id, Record.filename == filename
            )
        ).first()
        return (row[0], row[1], row[2], row[3]) if row else None


@router.post("/{name}/files/remove", summary="Remove files")
def remove_files(name: str, body: FilesRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    with ctx.db.write_session() as s:
        c = svc.get_channel(s, name)
        removed = rec_svc.remove_records(s, c, rec_svc.resolve_files(s, c, body.files))
    ctx.lookup.invalidate(ref.id)
    _kick(ctx, ref.id, removed)
    _audit(ctx, identity, "package:remove", name, removed, None)
    return {"removed": removed}


@router.post("/{name}/files/copy", summary="Copy or move files to another channel")
def copy_files(name: str, body: CopyRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict:
    src = ctx.channels.require(identity, name, Permission.CHANNEL_WRITE if body.move else Permission.CHANNEL_READ)
    dst = ctx.channels.require(identity, body.to, Permission.CHANNEL_WRITE)

    def work(s: Any) -> dict:
        c = svc.get_channel(s, name)
        t = svc.get_channel(s, body.to)
        rows = rec_svc.resolve_files(s, c, body.files)
        return rec_svc.copy_records(s, c, t, rows, move=body.move, force=body.force, actor=identity.username)

    done = ctx.db.run_write(work)
    paths = done["copied"] + done["unchanged"]
    _kick(ctx, dst.id, paths)
    if body.move:
        ctx.lookup.invalidate(src.id)
        _kick(ctx, src.id, paths)
    _audit(ctx, identity, "package:move" if body.move else "package:copy", f"{name}->{body.to}", body.files, done)
    return done


def _kick(ctx: Context, channel_id: int, paths: list[str], wait: bool = True) -> None:
    subdirs = {p.split("/", 1)[0] for p in paths}
    with ctx.db.session() as s:
        seqs = {sd: get_state(s, channel_id, sd, create=False) for sd in subdirs}
    for sd, state in seqs.items():
        ctx.request_index(channel_id, sd)
        if wait and state is not None:
            ctx.indexer.wait_for(channel_id, sd, state.change_seq, timeout=120)


@router.post(
    "/{name}/subdirs/{subdir}/import",
    summary="Import records metadata-only from a repodata.json",
    openapi_extra=body_spec("metadata", Permission.CHANNEL_WRITE),
)
def import_repodata(
    name: str,
    subdir: str,
    repodata: dict = Body(...),
    base_url: str | None = None,
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    check_subdir(subdir)

    def work(s: Any) -> dict:
        return rec_svc.import_repodata(s, svc.get_channel(s, name), subdir, repodata, base_url=base_url)

    counts = ctx.db.run_write(work)
    _kick(ctx, ref.id, [f"{subdir}/x"])
    _audit(ctx, identity, "channel:import", f"{name}/{subdir}", None, counts)
    return counts


@router.get("/{name}/subdirs/{subdir}/patch-instructions", summary="Current patch_instructions.json")
def get_patches(name: str, subdir: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_READ)
    with ctx.db.session() as s:
        state = get_state(s, ref.id, check_subdir(subdir), create=False)
        return json.loads(state.patch_instructions) if state and state.patch_instructions else {}


@router.put(
    "/{name}/subdirs/{subdir}/patch-instructions",
    summary="Replace patch_instructions.json",
    openapi_extra=body_spec("metadata", Permission.CHANNEL_MANAGE),
)
def put_patches(
    name: str, subdir: str, body: dict = Body(...), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    check_subdir(subdir)
    patches = PatchSet.parse(body)

    def work(s: Any) -> int:
        from condavault.channels.models import Record

        state = get_state(s, ref.id, subdir)
        before = state.patch_instructions
        state.patch_instructions = json.dumps(body) if patches else None
        n = 0
        for row in s.scalars(select(Record).where(Record.channel_id == ref.id, Record.subdir == subdir)):
            frag, removed = rec_svc.make_fragment(row.filename, json.loads(row.record), row.indexed_timestamp, patches)
            if frag != row.fragment or removed != row.removed:
                row.fragment, row.removed = frag, removed
                n += 1
        mark_dirty(s, ref.id, subdir, None)
        _audit(ctx, identity, "channel:patch", f"{name}/{subdir}", json.loads(before) if before else None, body)
        return n

    changed = ctx.db.run_write(work)
    _kick(ctx, ref.id, [f"{subdir}/x"])
    return {"records_changed": changed}


@router.post("/{name}/reindex", summary="Rebuild every index file of the channel from the database")
def reindex(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    from condavault.indexing.models import SubdirState

    def work(s: Any) -> list[str]:
        subdirs = list(s.scalars(select(SubdirState.subdir).where(SubdirState.channel_id == ref.id)))
        for sd in subdirs:
            mark_dirty(s, ref.id, sd, None)
        return subdirs

    subdirs = ctx.db.run_write(work)
    ctx.indexer.forget(ref.id)
    ctx.index_now(ref.id, subdirs)
    ctx.lookup.invalidate(ref.id)
    return {"reindexed": sorted(subdirs)}
