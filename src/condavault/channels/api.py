"""REST routes for channels and their files. Thin: parse, authorise, call one service, shape.

Everything that touches the database or the disk runs on a worker thread (sync routes, or
``anyio.to_thread`` in the async upload routes): the event loop only moves bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from fastapi import APIRouter, Body, Path, Query, Request

from condavault import metrics
from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.channels.depends import COUNT_CAP
from condavault.channels.repodata_stream import iter_records
from condavault.channels.schemas import (
    BatchCommitOut,
    BatchFilesOut,
    BatchOut,
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    CopyRequest,
    DependantOut,
    DependantsOut,
    FileOut,
    FilesRequest,
    UploadOut,
)
from condavault.channels.services import ChannelService
from condavault.channels.uploads import MAX_FILES_PER_REQUEST, UploadService
from condavault.context import Context
from condavault.errors import InvalidRequest
from condavault.packages import spool
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.multipart import read_files
from condavault.packages.spool import Received
from condavault.web.deps import MAX_OFFSET, CtxDep, IdentityDep
from condavault.web.limits import body_spec

router = APIRouter(prefix="/api/channels", tags=["channels"])
BATCH = Path(max_length=64, description="the id POST /uploads answered")
BINARY = {"schema": {"type": "string", "format": "binary"}}
RAW_BODY = {"requestBody": {"content": {"application/octet-stream": BINARY}}}
MULTIPART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/octet-stream": BINARY,
        }
    }
}


@router.get("", response_model=list[ChannelOut], summary="Channels the caller may read")
def list_channels(ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[ChannelOut]:
    return [ChannelOut.of(c) for c in ChannelService(ctx).list_readable(identity)]


@router.post("", response_model=ChannelOut, status_code=201, summary="Create a channel")
def create_channel(body: ChannelCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> ChannelOut:
    authorize(identity, Permission.CHANNEL_CREATE)
    c = ChannelService(ctx).create(identity, body.name, privacy=body.privacy, description=body.description)
    return ChannelOut.of(c)


@router.get("/{name}", response_model=ChannelOut, summary="One channel with per-subdir counts")
def show_channel(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> ChannelOut:
    ctx.channels.for_read(identity, name)
    return ChannelOut.of(*ChannelService(ctx).show(name))


@router.patch("/{name}", response_model=ChannelOut, summary="Change privacy or description")
def update_channel(
    name: str, body: ChannelUpdate, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> ChannelOut:
    ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    c = ChannelService(ctx).update(identity, name, privacy=body.privacy, description=body.description)
    return ChannelOut.of(c)


@router.delete("/{name}", status_code=204, summary="Delete a channel and its records")
def delete_channel(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> None:
    ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    ChannelService(ctx).delete(identity, name)


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
    rows = ChannelService(ctx).list_files(name, subdir=subdir, package=package, limit=limit, offset=offset)
    out = [FileOut.of(r, full) for r in rows]
    if full and rows:
        from condavault.signing.service import trust_summaries

        summaries = trust_summaries(ctx, [r.id for r in rows])
        for r, f in zip(rows, out, strict=True):
            f.signature = summaries[r.id]
    return out


@router.get(
    "/{name}/packages/{package}/dependants",
    response_model=DependantsOut,
    summary="Packages (of the channels the caller may read) that depend on a package of this channel",
)
def list_dependants(
    name: str,
    package: str = Path(max_length=100),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> DependantsOut:
    found, total = ChannelService(ctx).dependants(identity, name, package, limit=limit, offset=offset)
    return DependantsOut(
        package=package,
        dependants=[DependantOut(**d) for d in found],
        total=min(total, COUNT_CAP),
        total_capped=total > COUNT_CAP,
        limit=limit,
        offset=offset,
    )


@router.post(
    "/{name}/files",
    response_model=UploadOut,
    summary="Upload one package (raw body, or multipart field 'file')",
    openapi_extra={**RAW_BODY, **body_spec("upload", Permission.CHANNEL_WRITE)},
)
async def upload(
    request: Request,
    name: str,
    filename: str | None = Query(None, max_length=255, description="package filename; required for raw bodies"),
    subdir: str | None = Query(None, description="expected subdir (rejected if the package says otherwise)"),
    force: bool = False,
    skip_existing: bool = False,
    wait: bool = Query(True, description="return only once the index includes the file"),
    sha256: str | None = Query(None, description="expected sha256 of the bytes", pattern="^[0-9a-fA-F]{64}$"),
    identity: Identity = IdentityDep,
) -> UploadOut:
    ctx: Context = request.app.state.ctx
    files = await _receive(ctx, request, identity, name, filename, max_files=1, subdir=subdir)
    if not files:
        raise InvalidRequest("multipart upload needs a 'file' field", code="missing_file")
    fn, received = files[0]
    fn = filename or fn
    try:
        out = await anyio.to_thread.run_sync(
            lambda: UploadService(ctx).upload_one(
                identity,
                name,
                received,
                fn,
                subdir=subdir,
                force=force,
                skip_existing=skip_existing,
                wait=wait,
                sha256=sha256,
            )
        )
    finally:
        received.discard()  # consumed by a successful ingest; removed on every error path
    metrics.UPLOADS.labels(out["status"]).inc()
    return UploadOut(**out)


async def _receive(
    ctx: Context,
    request: Request,
    identity: Identity,
    channel: str,
    filename: str | None,
    *,
    max_files: int,
    subdir: str | None = None,
) -> list[tuple[str, Received]]:
    """Authorise a write, refuse what can be refused without the body (subdir, a raw body's filename), then
    receive the body's files: multipart ``file`` fields, or a raw body named by ``?filename=`` (hashed and
    spooled off the event loop either way)."""
    await anyio.to_thread.run_sync(ctx.channels.require, identity, channel, Permission.CHANNEL_WRITE)
    if subdir is not None:
        check_subdir(subdir)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        return await read_files(
            ctype, request.stream(), ctx.blobs.temp_file, max_bytes=ctx.settings.max_upload_bytes, max_files=max_files
        )
    if not filename:
        raise InvalidRequest("the 'filename' query parameter is required for a raw body", code="missing_filename")
    parse_filename(filename)
    return [(filename, await ctx.ingestor.aspool(request.stream()))]


@router.post(
    "/{name}/uploads",
    response_model=BatchOut,
    status_code=201,
    summary="Open an upload batch: the index is published once, at its commit",
)
def open_batch(name: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> BatchOut:
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    return BatchOut(**UploadService(ctx).open_batch(identity, name))


@router.get("/{name}/uploads/{batch}", response_model=BatchOut, summary="An upload batch: state and counts")
def get_batch(name: str, batch: str = BATCH, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> BatchOut:
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    return BatchOut(**UploadService(ctx).get_batch(identity, name, batch))


@router.post(
    "/{name}/uploads/{batch}/files",
    response_model=BatchFilesOut,
    summary="Add files to an upload batch (multipart, any number of 'file' fields; or one raw body)",
    openapi_extra={**MULTIPART, **body_spec("upload", Permission.CHANNEL_WRITE)},
)
async def batch_files(
    request: Request,
    name: str,
    batch: str = BATCH,
    filename: str | None = Query(None, max_length=255, description="the filename of a raw body"),
    force: bool = False,
    skip_existing: bool = False,
    identity: Identity = IdentityDep,
) -> BatchFilesOut:
    ctx: Context = request.app.state.ctx
    files = await _receive(ctx, request, identity, name, filename, max_files=MAX_FILES_PER_REQUEST)
    out = await anyio.to_thread.run_sync(
        lambda: UploadService(ctx).add_files(identity, name, batch, files, force=force, skip_existing=skip_existing)
    )
    for f in out["files"]:
        metrics.UPLOADS.labels(f["status"]).inc()
    return BatchFilesOut(**out)


@router.post(
    "/{name}/uploads/{batch}/commit",
    response_model=BatchCommitOut,
    summary="Close an upload batch and publish the index once",
)
def commit_batch(
    name: str,
    batch: str = BATCH,
    wait: bool = Query(True, description="return only once the index includes the batch"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> BatchCommitOut:
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    return BatchCommitOut(**UploadService(ctx).commit_batch(identity, name, batch, wait=wait))


@router.post("/{name}/files/remove", summary="Remove files")
def remove_files(
    name: str, body: FilesRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE)
    return {"removed": ChannelService(ctx).remove_files(identity, name, body.files)}


@router.post("/{name}/files/copy", summary="Copy or move files to another channel")
def copy_files(name: str, body: CopyRequest, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    ctx.channels.require(identity, name, Permission.CHANNEL_WRITE if body.move else Permission.CHANNEL_READ)
    ctx.channels.require(identity, body.to, Permission.CHANNEL_WRITE)
    return ChannelService(ctx).copy_files(identity, name, body.files, body.to, move=body.move, force=body.force)


@router.post(
    "/{name}/subdirs/{subdir}/import",
    summary="Import records metadata-only from a repodata.json",
    openapi_extra={
        **body_spec("metadata", Permission.CHANNEL_WRITE),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        },
    },
)
async def import_repodata(
    request: Request,
    name: str,
    subdir: str,
    base_url: str | None = None,
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, int]:
    """The body is spooled to a temp file (bounded by ``max_metadata_body_bytes``), then read a record at
    a time while the records are inserted a batch at a time: memory does not grow with the document."""
    await anyio.to_thread.run_sync(ctx.channels.require, identity, name, Permission.CHANNEL_WRITE)
    check_subdir(subdir)
    received = await spool.aspool(ctx.blobs.temp_file, ctx.settings.max_metadata_body_bytes, request.stream())
    try:
        return await anyio.to_thread.run_sync(
            lambda: ChannelService(ctx).import_repodata(identity, name, subdir, _entries(received), base_url=base_url)
        )
    finally:
        if received.path is not None:
            received.path.unlink(missing_ok=True)


def _entries(received: Received) -> Callable[[], Iterator[tuple[str, str, Any]]]:
    def entries() -> Iterator[tuple[str, str, Any]]:
        if received.path is None:
            yield from iter_records(io.BytesIO(received.data or b""))
            return
        with open(received.path, "rb") as fh:
            yield from iter_records(fh)

    return entries


@router.get("/{name}/subdirs/{subdir}/patch-instructions", summary="Current patch_instructions.json")
def get_patches(name: str, subdir: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> dict[str, Any]:
    ref = ctx.channels.require(identity, name, Permission.CHANNEL_READ)
    return ChannelService(ctx).get_patches(ref.id, subdir)


@router.put(
    "/{name}/subdirs/{subdir}/patch-instructions",
    summary="Replace patch_instructions.json",
    openapi_extra=body_spec("metadata", Permission.CHANNEL_MANAGE),
)
def put_patches(
    name: str, subdir: str, body: dict[str, Any] = Body(...), ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, int]:
    ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    return {"records_changed": ChannelService(ctx).put_patches(identity, name, subdir, body)}


@router.post("/{name}/reindex", summary="Rebuild every index file of the channel from the database (a job)")
def reindex(
    name: str,
    wait: bool = Query(True, description="return once it is done (else: 200 with the queued job's id)"),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> dict[str, Any]:
    ctx.channels.require(identity, name, Permission.CHANNEL_MANAGE)
    return ChannelService(ctx).reindex(identity, name, wait=wait)
