"""Wire the vulns domain into the app: routers, the ingest listener, ``ctx.extensions["vulns"]`` (the
mirror CVE filters' provider) and the scheduled jobs (source refresh, air-gap folder import, sweep)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from condavault.vulns import api

if TYPE_CHECKING:
    from fastapi import FastAPI

    from condavault.context import Context


def setup(ctx: Context) -> None:
    """Build the runtime once per Context and register it (idempotent)."""
    from condavault.vulns.tasks import VulnRuntime

    if "vulns_runtime" in ctx.extensions:
        return
    rt = VulnRuntime(ctx)
    rt.startup()
    ctx.extensions["vulns_runtime"] = rt
    ctx.extensions["vulns"] = rt.provider
    ctx.ingest_listeners.append(rt.on_ingested)
    s = ctx.settings
    if s.worker:
        ctx.runner.every(s.vulns_sweep_seconds, rt.sweep, "vulns-sweep")
        if s.vulns_sources:
            ctx.runner.cron(s.vulns_refresh_cron, rt.refresh, "vulns-refresh")
        if s.vulns_import_dir is not None:
            ctx.runner.cron(s.vulns_import_cron, rt.import_dropdir, "vulns-import")


def install(app: FastAPI) -> None:
    app.include_router(api.router)
    app.state.startup.append(setup)
