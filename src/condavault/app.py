"""The ASGI application factory: routers, lifespan, and the one error-to-HTTP mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from condavault import __version__, metrics
from condavault.airgap import api as airgap_api
from condavault.audit import api as audit_api
from condavault.auth import admin_api
from condavault.auth import api as auth_api
from condavault.auth.identity import Identity
from condavault.auth.services import bootstrap
from condavault.channels import api as channels_api
from condavault.config import Settings
from condavault.context import Context
from condavault.db import migrate
from condavault.errors import CondavaultError, Conflict, InvalidRequest
from condavault.jobs import api as jobs_api
from condavault.mirror import api as mirror_api
from condavault.scanning import api as scanning_api
from condavault.search import api as search_api
from condavault.serving import fast, repo
from condavault.serving.repo import repo_endpoint
from condavault.signing import api as signing_api
from condavault.vulns import api as vulns_api
from condavault.web import system, ui
from condavault.web.errors import json_error
from condavault.web.limits import BodyGuard, BodyRule

log = logging.getLogger(__name__)
ROUTERS = [
    system.router,
    channels_api.router,
    auth_api.router,
    admin_api.router,
    audit_api.router,
    mirror_api.router,
    vulns_api.router,
    jobs_api.router,
    search_api.router,
    airgap_api.router,
    signing_api.router,
    scanning_api.router,
]
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _session_identity(conn: HTTPConnection) -> Identity | None:
    """A web session's identity (the cookie), for ``auth.deps.identify``."""
    ctx: Context = conn.app.state.ctx
    return ctx.domains.auth.session_identity(conn)


def create_app(settings: Settings, *, ctx: Context | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.ctx is None
        if own:
            app.state.ctx = Context.build(settings)
        c: Context = app.state.ctx
        migrate.check(c.db.engine, settings.db_url)
        token = bootstrap(c.db, settings.admin_token_path)
        if token:
            print(
                f"\ncondavault: created the admin token (shown once; also stored in {settings.admin_token_path}):\n"
                f"  {token}\n",
                flush=True,
            )
        c.start()
        c.sweep()
        guard = getattr(app, "body_guard", None)
        if guard is not None:
            guard.prepare()  # the routes' body rules, read once here rather than by the first upload
        # the repo path's threads started, its queries compiled and a connection open before the first client
        try:
            await anyio.to_thread.run_sync(c.lookup.warm)
            await anyio.to_thread.run_sync(c.channels.lookup, "")  # never a channel name (URLs drop empty parts)
            c.lookup.prime_published_soon(after=partial(repo.prime_small, c, asyncio.get_running_loop()))
        except Exception:  # only a head start: the requests do the same work when they come
            log.warning("warming the repo lookups failed", exc_info=True)
        if own:
            # what start-up built (routes, compiled rules, models) lives as long as the process: frozen, a
            # full collection no longer walks it (those walks were the p95 of a 5,000-file package page)
            gc.collect()
            gc.freeze()
        log.info("condavault started", extra={"version": __version__, "data_dir": str(settings.data_dir)})
        try:
            yield
        finally:
            if own:
                c.close()
            else:  # the Context outlives the app (tests): still stop the jobs, drain the audit queue
                from condavault import wiring

                wiring.stop(c)

    app = CondavaultApp(
        title="condavault",
        version=__version__,
        description="On-premise conda package repository. conda clients use /api/repo/<channel>; "
        "everything else under /api is this JSON API.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.settings = settings
    app.state.session_identity = _session_identity

    @app.exception_handler(CondavaultError)
    async def _domain_error(_request: Request, exc: CondavaultError) -> JSONResponse:
        return json_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and ui.wants_page(request):
            return await ui.not_found_page(request)  # a browser on an unknown page: the UI's 404 page
        # unknown paths and methods: the same {"error": ...} shape as every other error
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = "no such path" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            {"error": {"code": code, "message": message, "details": {}}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse(
            {
                "error": {
                    "code": "validation_error",
                    "message": "request validation failed",
                    "details": {"errors": errors},
                }
            },
            status_code=422,
        )

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        log.info("client disconnected before its request was read", extra={"path": request.url.path})
        return Response(status_code=400)  # nobody is listening; uvicorn drops it

    @app.exception_handler(IntegrityError)
    async def _lost_race(request: Request, exc: IntegrityError) -> JSONResponse:
        # a unique constraint a concurrent writer won (checks ran before its commit): the caller retries
        log.info("concurrent write conflict", extra={"path": request.url.path, "error": str(exc.orig)[:300]})
        return json_error(Conflict("a concurrent change conflicted with this one; retry", code="concurrent_change"))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # a value the database refuses (a NUL in text on PostgreSQL, a number past a column): the input's fault
        log.info("value refused by the database", extra={"path": request.url.path, "error": str(exc.orig)[:300]})
        return json_error(InvalidRequest("a value in the request cannot be stored or searched", code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal error", "details": {}}}, status_code=500
        )

    app.router.routes.append(Route("/api/repo/{path:path}", repo_endpoint, methods=["GET", "HEAD"]))
    for router in ROUTERS:
        app.include_router(router)
    ui.mount(app)  # the web UI at / (after the API: it never shadows /api)
    app.add_middleware(RequestMetrics)
    app.body_guard = BodyGuard(settings, lambda: app.routes, _precheck_body)
    return app


def _precheck_body(conn: HTTPConnection, rule: BodyRule, params: dict[str, str]) -> bool:
    """Before more than a small body is read (``web.limits``): the caller's credentials (401 if invalid)
    and the route's permission. Returns whether the caller is authenticated."""
    from condavault.auth.deps import get_identity
    from condavault.auth.permissions import Permission
    from condavault.auth.policy import authorize

    ctx: Context = conn.app.state.ctx
    identity = get_identity(conn)
    if rule.permission:
        perm = Permission(rule.permission)
        if "name" in params:
            ctx.channels.require(identity, params["name"], perm)
        else:
            authorize(identity, perm)
    return identity.authenticated


REPO_PREFIX = "/api/repo/"


class CondavaultApp(FastAPI):
    """FastAPI, with the conda-client hot path taken before routing and middleware.

    ``GET``/``HEAD`` under ``/api/repo/`` is most of a repository's traffic (revalidations with
    ``If-None-Match``); it goes straight to ``serving.repo`` and skips the generic router and middleware
    stack. The route stays registered too, so it appears in ``app.routes`` (and the access matrix).
    """

    body_guard: BodyGuard | None = None

    def fast_answer(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes] | None:
        """A repo request answered from memory (``serving.fast``), called by the HTTP protocol
        (``web.listener``) before any ASGI: None sends it down the normal path."""
        return fast.answer(self.state, method, url, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.body_guard is not None:
            scope["app"] = self
            if "\x00" in scope["path"] or b"%00" in scope["query_string"]:  # never part of a valid URL
                await json_error(InvalidRequest("NUL in the URL", code="invalid_url"))(scope, receive, send)
                return
            await self.body_guard(scope, receive, send, self._dispatch)
            return
        await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"].startswith(REPO_PREFIX):
            scope["app"] = self
            scope["path_params"] = {"path": scope["path"][len(REPO_PREFIX) :]}
            status = 500

            async def counting_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                response = await repo_endpoint(Request(scope, receive))
                await response(scope, receive, counting_send)
            except Exception:
                log.exception("unhandled error on the repo path")
                if status == 500:
                    err = JSONResponse(
                        {"error": {"code": "internal_error", "message": "internal error", "details": {}}},
                        status_code=500,
                    )
                    await err(scope, receive, send)
            metrics.count_request("repo", status)
            return
        await super().__call__(scope, receive, send)


class RequestMetrics:
    """Counts requests by kind (repo, api, other) and status; no path or channel labels."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        kind = "repo" if path.startswith("/api/repo/") else "api" if path.startswith("/api/") else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.count_request(kind, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
