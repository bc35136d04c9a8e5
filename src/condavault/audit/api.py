"""``/api/audit/downloads`` and ``/api/audit/changes``: JSON or CSV, by date range, user, channel, package."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Query
from starlette.responses import JSONResponse, Response, StreamingResponse

from condavault.audit import services as svc
from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.context import Context
from condavault.errors import InvalidRequest
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api/audit", tags=["audit"])


def parse_when(value: str | None, *, end: bool) -> datetime | None:
    """ISO datetime, or a date (start of day; for ``to`` the end of that day)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            dt = datetime.combine(d, time.min, tzinfo=UTC)
            return dt + timedelta(days=1) if end else dt
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"not a date: {value!r} (use YYYY-MM-DD or an ISO datetime)", code="invalid_date")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _flush(ctx: Context) -> None:
    ctx.domains.audit.flush()


def _respond(rows: list[dict[str, Any]], columns: list[str], fmt: str, name: str) -> Response:
    if fmt == "csv":
        return StreamingResponse(
            svc.to_csv(rows, columns),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return JSONResponse([{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows])


@router.get("/downloads", summary="Package downloads (who, when, from where, which file)")
async def downloads(
    start: str | None = Query(None, alias="from", description="YYYY-MM-DD or ISO datetime (inclusive)"),
    end: str | None = Query(None, alias="to", description="YYYY-MM-DD (whole day) or ISO datetime (exclusive)"),
    user: str | None = Query(None, description="user name, or 'anonymous'"),
    channel: str | None = None,
    package: str | None = Query(None, description="package name"),
    format: Literal["json", "csv"] = "json",
    limit: int = Query(100_000, ge=1, le=1_000_000),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    authorize(identity, Permission.AUDIT_READ)
    a, b = parse_when(start, end=False), parse_when(end, end=True)

    def work() -> list[dict[str, Any]]:
        _flush(ctx)
        with ctx.db.session() as s:
            return svc.query_downloads(s, start=a, end=b, user=user, channel=channel, package=package, limit=limit)

    rows = await anyio.to_thread.run_sync(work)
    return _respond(rows, svc.DOWNLOAD_COLUMNS, format, "downloads")


@router.get("/changes", summary="Administrative changes (who changed what, before and after)")
async def changes(
    start: str | None = Query(None, alias="from"),
    end: str | None = Query(None, alias="to"),
    user: str | None = None,
    channel: str | None = None,
    package: str | None = None,
    action: str | None = Query(None, description="action prefix, e.g. 'channel:' or 'user:create'"),
    format: Literal["json", "csv"] = "json",
    limit: int = Query(100_000, ge=1, le=1_000_000),
    ctx: Context = CtxDep,
    identity: Identity = IdentityDep,
) -> Response:
    authorize(identity, Permission.AUDIT_READ)
    a, b = parse_when(start, end=False), parse_when(end, end=True)

    def work() -> list[dict[str, Any]]:
        _flush(ctx)
        with ctx.db.session() as s:
            return svc.query_changes(
                s, start=a, end=b, user=user, channel=channel, package=package, action=action, limit=limit
            )

    rows = await anyio.to_thread.run_sync(work)
    return _respond(rows, svc.CHANGE_COLUMNS, format, "changes")
