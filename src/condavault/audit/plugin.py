"""Wires the audit domain into the app: listeners, background writer, flush at shutdown, daily purge."""

from __future__ import annotations

import atexit
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from condavault.audit import api
from condavault.audit import services as svc
from condavault.audit.recorder import AuditRecorder

log = logging.getLogger(__name__)


def _startup(ctx: Any) -> None:
    rec = ctx.extensions.get("audit")
    if rec is None:
        rec = AuditRecorder(ctx.db)
        rec.enabled = ctx.settings.audit_downloads
        ctx.extensions["audit"] = rec
        ctx.download_listeners.append(rec.on_download)
        ctx.change_listeners.append(rec.on_change)
        atexit.register(rec.close)
        if ctx.settings.worker:
            ctx.runner.cron("17 3 * * *", lambda: purge(ctx), "audit-purge")
    rec.start()


def purge(ctx: Any) -> dict[str, int]:
    out = ctx.db.run_write(lambda s: svc.purge(s, ctx.settings.audit_retention_days))
    log.info("audit purge", extra={"purged": out})
    return out  # type: ignore[no-any-return]


def install(app: Any) -> None:
    app.include_router(api.router)
    app.state.startup.append(_startup)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                ctx = a.state.ctx
                rec = ctx.extensions.get("audit") if ctx is not None else None
                if rec is not None:
                    rec.close()  # drain the queue before the database goes away

    app.router.lifespan_context = lifespan
