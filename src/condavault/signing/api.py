"""``/api/signing`` and per-file trust routes: the server's public key, a file's signature outcome and its
admission statement (the same bytes as ``/api/repo/<channel>/<subdir>/<file>.admission.json``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.channels.models import Record
from condavault.context import Context
from condavault.errors import NotFound
from condavault.packages.filename import check_subdir, parse_filename
from condavault.signing.admission import PREDICATE_TYPE
from condavault.signing.models import RecordTrust
from condavault.signing.service import admission_bytes, server_key, trust_summary
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api", tags=["signing"])


@router.get("/signing/key", summary="The server's public key (verifies admission statements and bundles)")
def public_key(ctx: Context = CtxDep) -> dict[str, Any]:
    key = server_key(ctx.settings).public
    return {"id": key.id, "public_key": key.text, "predicate_type": PREDICATE_TYPE}


def _record(
    ctx: Context, identity: Identity, name: str, subdir: str, filename: str
) -> tuple[Record, RecordTrust | None]:
    check_subdir(subdir)
    parse_filename(filename)  # 400 for a name that is no package file
    ref = ctx.channels.for_read(identity, name)  # 404 for a channel the caller may not read
    with ctx.db.session() as s:
        row = s.execute(
            select(Record, RecordTrust)
            .outerjoin(RecordTrust, RecordTrust.record_id == Record.id)
            .where(Record.channel_id == ref.id, Record.subdir == subdir, Record.filename == filename)
        ).first()
        if row is None:
            raise NotFound(
                f"{subdir}/{filename} not found in channel {name!r}",
                code="file_not_found",
                channel=name,
                filename=filename,
            )
        s.expunge_all()
        return row[0], row[1]


@router.get(
    "/channels/{name}/files/{subdir}/{filename}/signature",
    summary="A file's carried signatures and attestations, and the outcome of their verification",
)
def file_signature(
    name: str, subdir: str, filename: str, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> dict[str, Any]:
    rec, trust = _record(ctx, identity, name, subdir, filename)
    out = trust_summary(trust)
    base = f"/api/repo/{name}/{subdir}/{filename}"
    out.update(
        filename=filename,
        subdir=subdir,
        sha256=rec.sha256,
        sidecar_url=f"{base}.sigs.{out['attestations_sha256']}" if out["attestations_sha256"] else None,
        admission_url=f"{base}.admission.json" if rec.has_blob else None,
    )
    return out


@router.get(
    "/channels/{name}/files/{subdir}/{filename}/admission",
    summary="The file's admission statement (in-toto v1 in a DSSE envelope, signed by the server key)",
)
def file_admission(
    name: str, subdir: str, filename: str, ctx: Context = CtxDep, identity: Identity = IdentityDep
) -> Response:
    rec, _ = _record(ctx, identity, name, subdir, filename)
    if not rec.has_blob or not rec.sha256:
        raise NotFound(
            f"{subdir}/{filename} has not been admitted yet (its bytes were never fetched)", code="not_admitted"
        )
    body = admission_bytes(ctx, name, subdir, filename, rec.sha256, rec.created_at.timestamp())
    return Response(body, media_type="application/json")
