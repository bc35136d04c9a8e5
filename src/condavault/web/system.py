"""Health, readiness and metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from condavault import __version__, metrics
from condavault.context import Context
from condavault.web.deps import CtxDep

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Readiness: database and blob store reachable")
async def readyz(ctx: Context = CtxDep) -> Response:
    problems = []
    try:
        await anyio.to_thread.run_sync(ctx.db.ping)
    except Exception as exc:  # pragma: no cover - depends on a broken database
        problems.append(f"database: {exc}")
    try:
        await anyio.to_thread.run_sync(ctx.blobs.check)
    except Exception as exc:
        problems.append(f"blob store: {exc}")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus() -> Response:
    metrics.fold_loop_counts()  # on the event loop, where the in-memory answers are counted
    # rendered on a thread, as before: a flood of scrapes must not hold the event loop
    body = await anyio.to_thread.run_sync(generate_latest, metrics.REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
